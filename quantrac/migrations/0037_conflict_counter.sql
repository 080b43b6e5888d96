-- The worker counts `conflict` per station: a stored key sent again with another value (dead-lettered).
ALTER TABLE delivery_counts DROP CONSTRAINT delivery_counts_counter_check;
ALTER TABLE delivery_counts ADD CONSTRAINT delivery_counts_counter_check
    CHECK (counter IN ('received', 'forwarded', 'deadlettered', 'late', 'stored', 'duplicate', 'conflict'));
