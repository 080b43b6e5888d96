"""quantrac: real-time monitoring of industrial-zone discharges.

This package is the small shared core: settings, the domain model, the station registry,
the local service stack and the command line. The pipeline stages live in `ingest`,
`processors`, `alerts` and `api`; data flows one way through them.
"""

__version__ = "0.1.0"
