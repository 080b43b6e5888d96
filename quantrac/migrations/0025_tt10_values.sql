-- The original text of values that arrived in TT10 files, keyed like readings, so
-- `quantrac tt10 export` writes them back with the same number formatting ("0.050", "42.0").
-- `readings` keeps the numbers; this side table keeps only how they were written and which file
-- they came from (its province and facility codes are reused for the exported file name).
CREATE TABLE tt10_values (
    station_id  text NOT NULL,
    parameter   text NOT NULL,
    ts          timestamptz NOT NULL,
    value_text  text NOT NULL,
    file_name   text NOT NULL,
    line_no     integer NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, parameter, ts)
);
CREATE INDEX tt10_values_ts_brin ON tt10_values USING brin (ts);
