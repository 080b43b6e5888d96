-- The readings hypertable's time index becomes a BRIN index, as native PostgreSQL's day partitions have had
-- since 0002: create_hypertable had added a B-tree on ts (readings_ts_idx), a second B-tree every stored reading
-- updates besides the primary key. Every query of readings names its station (the primary key serves it) or scans
-- whole chunks of a time range (rollup rebuilds, the summary's week, aggregate refreshes), which chunk exclusion
-- and a BRIN index of time-ordered rows serve. bench/worker.py's COPY of prebuilt buffers into readings: +12 to
-- +19 % with the BRIN index instead of the B-tree (2026-12-05, AMD host).
DROP INDEX IF EXISTS readings_ts_idx;
CREATE INDEX IF NOT EXISTS readings_ts_brin ON readings USING brin (ts);
