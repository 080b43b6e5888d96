"""Alert rules, the alert lifecycle, silences, escalation and notifications."""
