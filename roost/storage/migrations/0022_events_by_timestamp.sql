-- GET /rooms/{roomId}/timestamp_to_event (and its federation counterpart) look for the
-- room's event closest to a time.
CREATE INDEX events_room_timestamp ON events (room_id, origin_server_ts);
