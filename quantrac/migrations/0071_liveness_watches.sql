-- A liveness entry's holds are kept with it: a station back from silence clearing its offline alert (back_since) and
-- its clock's watch (processors.station_clock), so a restarted worker neither restarts the hold nor the watch window.
ALTER TABLE station_liveness ADD COLUMN IF NOT EXISTS watches jsonb;
