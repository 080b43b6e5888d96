-- Data completeness per station per hour and per local day (Asia/Ho_Chi_Minh), kept by the worker
-- in the same transaction as the readings it counts (processors/completeness.py), so a
-- redelivered batch is not counted twice. `expected` = the station's parameters x the slots of
-- its reporting interval in the period; `received` counts every reading, `valid` those with
-- status 00 and a finite value; `late` those that came later than the allowed lateness.
CREATE TABLE completeness (
    station_id  text NOT NULL,
    period      text NOT NULL CHECK (period IN ('hour', 'day')),
    bucket      timestamptz NOT NULL,
    expected    integer NOT NULL,
    received    integer NOT NULL DEFAULT 0,
    valid       integer NOT NULL DEFAULT 0,
    late        integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, period, bucket)
);
