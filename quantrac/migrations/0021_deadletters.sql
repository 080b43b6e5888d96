-- Dead letters kept queryable: one row per record of the dead-letter topic (its Kafka coordinates
-- make the copy idempotent), with the original bytes, so `quantrac deadletter replay` can send
-- them through again once the registry is fixed.
CREATE TABLE deadletters (
    id            bigserial PRIMARY KEY,
    topic_partition integer NOT NULL,
    topic_offset  bigint NOT NULL,
    kafka_topic   text NOT NULL,
    source        text NOT NULL,
    topic         text NOT NULL,
    reason        text NOT NULL,
    message       text NOT NULL,
    received_at   timestamptz NOT NULL,
    station_id    text,
    parameter     text,
    item_index    integer,
    payload       bytea NOT NULL,
    replayed_at   timestamptz,
    replay_result text,
    UNIQUE (kafka_topic, topic_partition, topic_offset)
);
CREATE INDEX deadletters_received_at ON deadletters (received_at);
CREATE INDEX deadletters_station ON deadletters (station_id, received_at);
CREATE INDEX deadletters_reason ON deadletters (reason, received_at);
