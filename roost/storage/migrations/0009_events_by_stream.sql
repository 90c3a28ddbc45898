-- Reading the events stream by position alone, across rooms: the shared window of
-- recent events behind /sync and the socket (storage/sync_queries.py) and the
-- federation sender read (after, upto] on every message; without this index each
-- read scanned the whole events table.
CREATE INDEX events_stream ON events (stream_ordering);
