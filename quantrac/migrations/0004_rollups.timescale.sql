-- Rollups on TimescaleDB: continuous aggregates with the same names and columns as the
-- PostgreSQL path's rollup tables, so the history queries are one SQL for both stores.
-- Real-time aggregation is on (materialized_only = false): buckets newer than the last refresh
-- are computed from the hypertable at query time. Late rows older than a policy's start_offset
-- are caught by the maintenance timer, which refreshes the whole range: only invalidated buckets
-- are recomputed (timescaledb#1428, #2285, #3546 are about late rows outside the policy window).
-- Means, minimum and maximum are over valid readings (status 00 with a finite value).
CREATE MATERIALIZED VIEW readings_5m WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT station_id, parameter, time_bucket(INTERVAL '5 minutes', ts) AS bucket,
       avg(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')) AS avg,
       min(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')) AS min,
       max(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')) AS max,
       count(*)::integer AS count,
       (count(*) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')))::integer AS count_valid
FROM readings GROUP BY station_id, parameter, time_bucket(INTERVAL '5 minutes', ts)
WITH NO DATA;

CREATE MATERIALIZED VIEW readings_1h WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT station_id, parameter, time_bucket(INTERVAL '1 hour', ts) AS bucket,
       avg(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')) AS avg,
       min(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')) AS min,
       max(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')) AS max,
       count(*)::integer AS count,
       (count(*) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')))::integer AS count_valid
FROM readings GROUP BY station_id, parameter, time_bucket(INTERVAL '1 hour', ts)
WITH NO DATA;

-- Day buckets are local days in Asia/Ho_Chi_Minh (time_bucket with a time zone).
CREATE MATERIALIZED VIEW readings_1d WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT station_id, parameter, time_bucket(INTERVAL '1 day', ts, 'Asia/Ho_Chi_Minh') AS bucket,
       avg(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')) AS avg,
       min(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')) AS min,
       max(value) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')) AS max,
       count(*)::integer AS count,
       (count(*) FILTER (WHERE status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')))::integer AS count_valid
FROM readings GROUP BY station_id, parameter, time_bucket(INTERVAL '1 day', ts, 'Asia/Ho_Chi_Minh')
WITH NO DATA;

-- Refresh policies: end_offset leaves the still-filling bucket to real-time aggregation.
SELECT add_continuous_aggregate_policy('readings_5m', start_offset => INTERVAL '2 days',
       end_offset => INTERVAL '5 minutes', schedule_interval => INTERVAL '5 minutes');
SELECT add_continuous_aggregate_policy('readings_1h', start_offset => INTERVAL '7 days',
       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes');
SELECT add_continuous_aggregate_policy('readings_1d', start_offset => INTERVAL '35 days',
       end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '6 hours');
