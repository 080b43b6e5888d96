-- Readings on native PostgreSQL: range-partitioned by event time, one partition a day
-- (created ahead by quantrac_ensure_partitions, dropped whole by retention).
-- The primary key makes a redelivered reading a no-op (INSERT ... ON CONFLICT DO NOTHING).
CREATE TABLE readings (
    station_id  text NOT NULL,
    parameter   text NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision,
    unit        text NOT NULL,
    status      char(2) NOT NULL CHECK (status IN ('00', '01', '02')),
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, parameter, ts)
) PARTITION BY RANGE (ts);

CREATE FUNCTION quantrac_ensure_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day date := first_day;
    created integer := 0;
    part text;
BEGIN
    WHILE day <= last_day LOOP
        part := format('readings_%s', to_char(day, 'YYYYMMDD'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE IF NOT EXISTS %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                part, (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
            EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I USING brin (ts)', part || '_ts_brin', part);
            created := created + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END $$;
