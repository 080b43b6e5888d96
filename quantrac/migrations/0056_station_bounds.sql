-- Registry records are bounded (quantrac.domain: interval and offline grace at most a week, retention at most
-- 36500 days), so a retention pass or a summary never computes a date before year 1. A stored record beyond a
-- bound is brought to it, so that it still loads.
UPDATE stations SET spec = jsonb_set(spec, '{expected_interval_s}', '604800'), expected_interval_s = 604800
    WHERE (spec->>'expected_interval_s')::numeric > 604800;
UPDATE stations SET spec = jsonb_set(spec, '{offline_grace_s}', '604800') WHERE (spec->>'offline_grace_s')::numeric > 604800;
UPDATE stations SET spec = jsonb_set(spec, '{retention_days}', '36500') WHERE (spec->>'retention_days')::numeric > 36500;
