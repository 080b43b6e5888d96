-- Analysts register other kinds of stations: drinking-water intakes and surface-water (river) stations.
ALTER TABLE stations DROP CONSTRAINT IF EXISTS stations_kind_check;
ALTER TABLE stations ADD CONSTRAINT stations_kind_check
    CHECK (kind IN ('wastewater', 'emission', 'drinking_water', 'surface_water'));
