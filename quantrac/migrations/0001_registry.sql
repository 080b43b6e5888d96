-- Station registry. `spec` holds the whole station record (parameters, units, effective limits)
-- as the registry loader computed it; the other columns are there to filter and join on.
CREATE TABLE stations (
    id                  text PRIMARY KEY,
    name                text NOT NULL,
    zone                text NOT NULL,
    facility            text NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('wastewater', 'emission')),
    expected_interval_s integer NOT NULL CHECK (expected_interval_s > 0),
    spec                jsonb NOT NULL,
    retired_at          timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stations_zone ON stations (zone);
