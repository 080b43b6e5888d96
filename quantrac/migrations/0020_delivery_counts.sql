-- Per-station delivery accounting, one row per hour, station, counter and reason.
-- The bridge adds what it received, forwarded and dead-lettered; the worker adds, in the same
-- transaction as the readings, what it stored and what were duplicates. Rows only grow (n = n + delta).
CREATE TABLE delivery_counts (
    hour        timestamptz NOT NULL,
    station_id  text NOT NULL,
    counter     text NOT NULL CHECK (counter IN ('received', 'forwarded', 'deadlettered', 'late', 'stored', 'duplicate')),
    reason      text NOT NULL DEFAULT '',
    n           bigint NOT NULL CHECK (n >= 0),
    PRIMARY KEY (station_id, hour, counter, reason)
);
CREATE INDEX delivery_counts_hour ON delivery_counts (hour);
