-- Native PostgreSQL's day partitions have had a BRIN index on ts since 0002 (quantrac_ensure_partitions);
-- 0075_readings_ts_brin.timescale.sql gives the hypertable the same. The version keeps both stores level.
SELECT 1;
