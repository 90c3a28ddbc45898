-- Reports of events, rooms and users (POST .../report), kept for the server's admins.
CREATE TABLE reports (
    report_id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('event', 'room', 'user')),
    reporter TEXT NOT NULL,
    room_id TEXT,          -- event and room reports
    event_id TEXT,         -- event reports
    target_user_id TEXT,   -- user reports
    reason TEXT,
    received_ts BIGINT NOT NULL
);
CREATE INDEX reports_by_time ON reports (received_ts);
