-- The worker's per-station state, kept in the store instead of Faust tables (changelog topics). A worker
-- that takes over a partition reads it here; Faust then has no table to recover, and its table recovery
-- was seen to hang for good after a rebalance (docs/operations.md).
CREATE TABLE IF NOT EXISTS detection_snapshots (
    station_id text PRIMARY KEY,
    state bytea NOT NULL,            -- processors.detection_state.StationState as JSON, with its stored_through_us
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS station_liveness (
    station_id text PRIMARY KEY,
    event_ts timestamptz NOT NULL,     -- event time of the newest live reading
    received_at timestamptz NOT NULL,  -- when the bridge received the newest live reading
    offline boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
