-- Alerts: at most one active (not resolved) alert per station + parameter + rule.
CREATE TABLE alerts (
    id              bigserial PRIMARY KEY,
    station_id      text NOT NULL,
    parameter       text NOT NULL,
    rule            text NOT NULL,
    basis           text NOT NULL,
    severity        text NOT NULL CHECK (severity IN ('warning', 'critical')),
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'resolved')),
    opened_at       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    resolved_at     timestamptz,
    first_ts        timestamptz NOT NULL,
    last_ts         timestamptz NOT NULL,
    last_value      double precision,
    peak_value      double precision,
    limit_value     double precision,
    limit_source    text,
    count           integer NOT NULL DEFAULT 1,
    message         text NOT NULL
);
CREATE UNIQUE INDEX alerts_one_active ON alerts (station_id, parameter, rule) WHERE status <> 'resolved';
CREATE INDEX alerts_opened_at ON alerts (opened_at DESC);
CREATE INDEX alerts_station ON alerts (station_id, opened_at DESC);
