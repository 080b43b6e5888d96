-- Rollups on native PostgreSQL: one table per bucket width, kept exact by the worker, which
-- recomputes from the raw readings exactly the buckets a batch's new readings touched, in the
-- same transaction (processors/rollups.py). A late reading therefore corrects its buckets.
-- Means, minimum and maximum are over valid readings (status 00 with a finite value); `count`
-- counts every reading, `count_valid` the valid ones (completeness).
-- Buckets: 5m and 1h aligned to UTC, 1d = the local day in Asia/Ho_Chi_Minh (quantrac/timebuckets.py).
CREATE TABLE readings_5m (
    station_id  text NOT NULL,
    parameter   text NOT NULL,
    bucket      timestamptz NOT NULL,
    avg         double precision,
    min         double precision,
    max         double precision,
    count       integer NOT NULL,
    count_valid integer NOT NULL,
    PRIMARY KEY (station_id, parameter, bucket)
);
CREATE TABLE readings_1h (LIKE readings_5m INCLUDING ALL);
CREATE TABLE readings_1d (LIKE readings_5m INCLUDING ALL);

-- Readings stored before this version get their rollups now.
INSERT INTO readings_5m
SELECT station_id, parameter, date_bin('5 minutes', ts, '1970-01-01 00:00:00+00'),
       avg(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')),
       min(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')),
       max(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')),
       count(*),
       count(*) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity'))
FROM readings GROUP BY 1, 2, 3;
INSERT INTO readings_1h
SELECT station_id, parameter, date_bin('1 hour', ts, '1970-01-01 00:00:00+00'),
       avg(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')),
       min(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')),
       max(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')),
       count(*),
       count(*) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity'))
FROM readings GROUP BY 1, 2, 3;
INSERT INTO readings_1d
SELECT station_id, parameter, date_trunc('day', ts AT TIME ZONE 'Asia/Ho_Chi_Minh') AT TIME ZONE 'Asia/Ho_Chi_Minh',
       avg(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')),
       min(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')),
       max(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')),
       count(*),
       count(*) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity'))
FROM readings GROUP BY 1, 2, 3;
