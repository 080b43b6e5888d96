-- An alert's history and live stream also say when its condition starts to clear (the clear hold begins) and
-- when a value inside the hysteresis band restarts the hold: event kind 'clearing' (never notified).
-- NOT VALID: the rows already there satisfied the narrower check, so the table is not scanned under the
-- exclusive lock; new rows are checked all the same.
ALTER TABLE alert_events DROP CONSTRAINT IF EXISTS alert_events_kind_check;
ALTER TABLE alert_events ADD CONSTRAINT alert_events_kind_check
    CHECK (kind IN ('opened', 'updated', 'acknowledged', 'resolved', 'commented', 'escalated', 'reminded', 'clearing'))
    NOT VALID;
