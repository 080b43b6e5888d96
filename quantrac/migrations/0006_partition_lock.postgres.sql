-- Two sessions (the worker's writer and its maintenance timer) may create the same day partition
-- at once; CREATE TABLE IF NOT EXISTS is not safe against that race ("relation already exists").
-- Serialise partition creation with a transaction-scoped advisory lock.
CREATE OR REPLACE FUNCTION quantrac_ensure_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day date := first_day;
    created integer := 0;
    part text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('quantrac.partitions'));
    WHILE day <= last_day LOOP
        part := format('readings_%s', to_char(day, 'YYYYMMDD'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                part, (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
            EXECUTE format('CREATE INDEX %I ON %I USING brin (ts)', part || '_ts_brin', part);
            created := created + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END $$;
