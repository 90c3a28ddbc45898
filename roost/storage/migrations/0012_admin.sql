-- Rooms an admin has blocked: local users may not join them (nor be invited),
-- and the room is left out of the directory.
CREATE TABLE blocked_rooms (
    room_id TEXT PRIMARY KEY,
    blocked_by TEXT NOT NULL,
    blocked_ts BIGINT NOT NULL
);
