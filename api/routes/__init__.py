"""One module per resource, each with a `router` that `api.main` mounts (behind the API key, except `health`)."""
