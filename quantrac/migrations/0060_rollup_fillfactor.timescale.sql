-- Native PostgreSQL leaves room in its rollup tables' pages for the worker's in-place merges
-- (0060_rollup_fillfactor.postgres.sql). TimescaleDB's rollups are continuous aggregates that
-- TimescaleDB materialises itself: nothing to change; the version keeps both stores level.
SELECT 1;
