-- An anomaly alert keeps the reading's value in last_value and peak_value, and the detector's score in its own
-- column (issue 18). Alerts opened before this kept the score in last_value: it moves to score, and their
-- reading's value, which was not kept, is unknown.
ALTER TABLE alerts ADD COLUMN score double precision;
UPDATE alerts SET score = last_value, last_value = NULL, peak_value = NULL WHERE rule LIKE 'anomaly\_%';
