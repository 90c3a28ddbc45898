-- Accounts: users, their devices, and the login sessions behind access tokens.

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- One row per login. An access token names its session; deleting the row
-- revokes every token of that login at once. refresh_generation counts
-- rotations: a refresh token carries the generation it was issued at, so a
-- token presented after it was rotated is recognised as reused.
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    refresh_generation INTEGER,
    refresh_secret_hash TEXT,
    refresh_expires_ts BIGINT,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX sessions_by_device ON sessions (user_id, device_id);
