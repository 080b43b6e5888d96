-- Readings on TimescaleDB: a hypertable with one-day chunks (a station-day of 5-minute data is
-- small, and retention drops whole chunks). No space partitioning: one node, and station_id
-- already leads the primary key.
CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE TABLE readings (
    station_id  text NOT NULL,
    parameter   text NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision,
    unit        text NOT NULL,
    status      char(2) NOT NULL CHECK (status IN ('00', '01', '02')),
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, parameter, ts)
);
SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day');

-- Same signature as the PostgreSQL path, so the writer does not care which store it has.
CREATE FUNCTION quantrac_ensure_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE sql AS $$ SELECT 0 $$;
