-- Dead letters of bounded size, and the quarantine: records a loop set aside after its tries.
-- A dead letter keeps at most the head of a payload (QUANTRAC_DEADLETTER_PAYLOAD_CAP_BYTES), so its
-- size and SHA-256 say what the whole was; `truncated` says it was cut. `stage` names the loop that
-- wrote it: `ingest` for validation at the edge, else the loop that quarantined a record (bridge,
-- deadletter-keeper, worker, notifier, tt10, import, replay). Rows a loop writes straight to
-- PostgreSQL (the notifier's) have no Kafka coordinates.
ALTER TABLE deadletters
    ALTER COLUMN kafka_topic DROP NOT NULL,
    ALTER COLUMN topic_partition DROP NOT NULL,
    ALTER COLUMN topic_offset DROP NOT NULL,
    ADD COLUMN stage text NOT NULL DEFAULT 'ingest',
    ADD COLUMN payload_size bigint,
    ADD COLUMN payload_sha256 text,
    ADD COLUMN truncated boolean NOT NULL DEFAULT false;
UPDATE deadletters SET payload_size = octet_length(payload), payload_sha256 = encode(sha256(payload), 'hex');
CREATE INDEX deadletters_stage ON deadletters (stage, received_at);
