-- The worker now adds each batch's sums to the rollup rows (processors/rollups.py): every batch
-- updates the hour and day row of each series it holds, and the 5-minute rows of the buckets it
-- touches. Room left in each page lets those updates be HOT (no new index entry, the old version
-- pruned in place), which halved the buffers an hour/day merge touches in bench/store_writes.py.
-- Applies to pages written from now on.
ALTER TABLE readings_5m SET (fillfactor = 80);
ALTER TABLE readings_1h SET (fillfactor = 50);
ALTER TABLE readings_1d SET (fillfactor = 50);
