-- Bridges that hold (or held) a persistent MQTT session, with their last heartbeat.
-- A row is written by the bridge while it runs and deleted once its session has ended
-- (drained on SIGTERM, or by `quantrac bridge drain`). A row whose heartbeat is old is a
-- stranded session: the broker keeps dealing it a share of the messages and nobody reads them.
CREATE TABLE IF NOT EXISTS bridge_sessions (
    client_id    text PRIMARY KEY,
    subscription text NOT NULL,
    state        text NOT NULL CHECK (state IN ('running', 'stopping', 'stopped')),
    heartbeat_s  real NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now()
);
