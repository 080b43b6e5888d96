-- Analysts' tools: registry audit, historical alerts, import progress and log.

-- Every change to the registry (create, update, retire) with who made it and the record before and after.
CREATE TABLE station_audit (
    id          bigserial PRIMARY KEY,
    station_id  text NOT NULL,
    action      text NOT NULL CHECK (action IN ('created', 'updated', 'retired')),
    actor       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    before      jsonb,
    after       jsonb
);
CREATE INDEX station_audit_station ON station_audit (station_id, id);

-- Alerts raised from imported (backfilled) readings: kept and shown, never notified nor escalated.
ALTER TABLE alerts ADD COLUMN historical boolean NOT NULL DEFAULT false;

-- How far an import of one file got: rows whose readings Kafka confirmed (resume point).
CREATE TABLE import_progress (
    file_sha256     text NOT NULL,
    station_id      text NOT NULL,
    rows_total      integer NOT NULL,
    rows_confirmed  integer NOT NULL,
    readings_sent   bigint NOT NULL DEFAULT 0,
    rejected        bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_sha256, station_id)
);

-- One row per run of `quantrac import`.
CREATE TABLE import_log (
    id              bigserial PRIMARY KEY,
    station_id      text NOT NULL,
    source          text NOT NULL,
    file_sha256     text NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    rows_skipped    integer NOT NULL DEFAULT 0,
    rows_read       integer NOT NULL DEFAULT 0,
    readings_sent   bigint NOT NULL DEFAULT 0,
    rejected        bigint NOT NULL DEFAULT 0
);
