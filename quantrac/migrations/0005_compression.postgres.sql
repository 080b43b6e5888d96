-- Native PostgreSQL has no compression; BRIN on time (0002) keeps the indexes of the
-- append-mostly day partitions small. A BRIN on the rollups' bucket serves the retention
-- deletes without a sequential scan.
CREATE INDEX readings_5m_bucket_brin ON readings_5m USING brin (bucket);
CREATE INDEX readings_1h_bucket_brin ON readings_1h USING brin (bucket);
CREATE INDEX readings_1d_bucket_brin ON readings_1d USING brin (bucket);
