"""Ingest: MQTT bridge, TT10 file adapter, importer, dead-letter keeper and station simulator."""
