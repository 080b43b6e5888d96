-- Compression of the readings hypertable: segmented by station and parameter (every history
-- query filters on both), ordered by time. Chunks older than 7 days are compressed; late
-- readings can still be inserted into compressed chunks (TimescaleDB 2.11+).
-- Retention is configuration (QUANTRAC_RETENTION_DAYS): processors/partitions.py installs the
-- retention policies on the hypertable and the continuous aggregates from the settings.
ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'station_id, parameter',
                          timescaledb.compress_orderby = 'ts DESC');
SELECT add_compression_policy('readings', compress_after => INTERVAL '7 days');
