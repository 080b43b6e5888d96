-- Alert lifecycle: acknowledgement, resolution, hysteresis state, escalation, zone; the full
-- history of every alert in alert_events (also the notifier's outbox: it reads events by id).
ALTER TABLE alerts
    ADD COLUMN zone              text,
    ADD COLUMN acknowledged_at   timestamptz,
    ADD COLUMN acknowledged_by   text,
    ADD COLUMN resolved_by       text,
    ADD COLUMN clear_since       timestamptz,
    ADD COLUMN escalated_at      timestamptz,
    ADD COLUMN reminders_sent    integer NOT NULL DEFAULT 0,
    ADD COLUMN last_notified_at  timestamptz;
UPDATE alerts a SET zone = s.zone FROM stations s WHERE s.id = a.station_id AND a.zone IS NULL;
CREATE INDEX alerts_zone ON alerts (zone, opened_at DESC);
CREATE INDEX alerts_unacked ON alerts (opened_at) WHERE status = 'open';

CREATE TABLE alert_events (
    id         bigserial PRIMARY KEY,
    alert_id   bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL DEFAULT now(),
    kind       text NOT NULL CHECK (kind IN ('opened', 'updated', 'acknowledged', 'resolved', 'commented',
                                             'escalated', 'reminded')),
    actor      text NOT NULL,
    status     text NOT NULL,
    value      double precision,
    note       text
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, id);

CREATE TABLE silences (
    id          bigserial PRIMARY KEY,
    station_id  text NOT NULL,
    parameter   text,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    reason      text NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    deleted_by  text,
    CHECK (ends_at > starts_at)
);
CREATE INDEX silences_station ON silences (station_id, ends_at) WHERE deleted_at IS NULL;

CREATE TABLE api_keys (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('operator', 'analyst', 'admin')),
    prefix      text NOT NULL UNIQUE,
    key_hash    text NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    revoked_by  text
);

-- One row per delivery attempt (or suppression) of an alert event on a channel.
CREATE TABLE notification_deliveries (
    id          bigserial PRIMARY KEY,
    alert_id    bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    event_id    bigint NOT NULL REFERENCES alert_events (id) ON DELETE CASCADE,
    channel     text NOT NULL,
    attempt     integer NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('delivered', 'failed', 'suppressed')),
    detail      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notification_deliveries_alert ON notification_deliveries (alert_id, id);

-- Where the notifier is in alert_events.
CREATE TABLE notifier_cursor (
    name     text PRIMARY KEY,
    event_id bigint NOT NULL
);
