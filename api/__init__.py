"""The HTTP API: `api.main.create_app` builds the FastAPI app from the routers in `api.routes`."""
