-- The federation sender's durable state: how far it has read the events
-- stream, what each destination is still owed, and when to try it again.
--
-- The sender reads local events after `stream_position`, and in one
-- transaction queues each for every destination and moves the position on;
-- a destination's rows are deleted only once it has answered 200 to the
-- transaction that carried them. A restart therefore loses nothing and
-- sends in the same order.

CREATE TABLE federation_sender_position (
    lock CHAR(1) PRIMARY KEY DEFAULT 'X' CHECK (lock = 'X'),
    stream_position BIGINT NOT NULL
);

-- PDUs owed to a destination, sent in stream order.
CREATE TABLE federation_outbound_pdus (
    destination TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (destination, stream_ordering)
);

-- EDUs (typing, receipts, presence) owed to a destination, in the order queued.
CREATE TABLE federation_outbound_edus (
    id BIGSERIAL PRIMARY KEY,
    destination TEXT NOT NULL,
    edu_type TEXT NOT NULL,
    content TEXT NOT NULL,
    queued_ts BIGINT NOT NULL
);
CREATE INDEX federation_outbound_edus_destination ON federation_outbound_edus (destination, id);

-- Retry state of destinations that failed; a row is removed on success.
-- A destination is never given up on: next_attempt_ts only moves later by at
-- most the configured maximum interval.
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    failure_count INTEGER NOT NULL,
    retry_interval_ms BIGINT NOT NULL,
    next_attempt_ts BIGINT NOT NULL
);
