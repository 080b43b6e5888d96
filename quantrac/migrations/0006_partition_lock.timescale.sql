-- TimescaleDB creates chunks itself; nothing to serialise. Kept so both stores share version numbers.
SELECT 1;
