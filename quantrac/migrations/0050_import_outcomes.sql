-- An import tells the truth (issue 19): each run keeps its outcome by reason, and rows that were
-- rejected are remembered so that a later run, after the registry is fixed, sends them again.

ALTER TABLE import_log
    ADD COLUMN dry_run      boolean NOT NULL DEFAULT false,
    ADD COLUMN rows_retried integer NOT NULL DEFAULT 0,
    ADD COLUMN rows_rejected integer NOT NULL DEFAULT 0,
    -- {"too_old": {"count": 3, "examples": ["row 2: ...", ...], "fix": "..."}, ...}
    ADD COLUMN outcomes     jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Units (CSV rows, TT10 files) of an input with at least one rejected reading: confirmed as read
-- (`import_progress.rows_confirmed` counts them) but not as stored; the next run reads them again.
CREATE TABLE import_rejected_units (
    file_sha256 text NOT NULL,
    station_id  text NOT NULL,
    unit_index  integer NOT NULL,
    reason      text NOT NULL,
    PRIMARY KEY (file_sha256, station_id, unit_index)
);
