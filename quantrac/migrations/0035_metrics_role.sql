-- Role `metrics`: a key that may read only GET /metrics (the credential Prometheus scrapes with).
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check CHECK (role IN ('operator', 'analyst', 'admin', 'metrics'));
