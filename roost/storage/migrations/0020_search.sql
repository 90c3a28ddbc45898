-- Full-text search over room events (POST /search).
--
-- One row per searchable event (m.room.message body, m.room.name name,
-- m.room.topic topic), with its text as a tsvector: stemmed ('english') and
-- word for word ('simple'), see roost/storage/search.py. Rows are written by the search indexer, which follows the
-- events stream from the position stored below (so a send never waits for
-- it); a search first lets it catch up, so it finds what was just sent.
CREATE TABLE event_search (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    key TEXT NOT NULL,                 -- content.body, content.name or content.topic
    contains_url BOOLEAN NOT NULL,
    stream_ordering BIGINT NOT NULL,
    vector tsvector NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING gin (vector);
CREATE INDEX event_search_room_stream ON event_search (room_id, stream_ordering);

-- How far along the events stream the indexer has read.
CREATE TABLE event_search_position (
    lock CHAR(1) PRIMARY KEY DEFAULT 'X' CHECK (lock = 'X'),
    stream_ordering BIGINT NOT NULL
);
INSERT INTO event_search_position (lock, stream_ordering) VALUES ('X', 0);
