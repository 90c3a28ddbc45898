-- Users who deactivated with erase: true (issue 15). Their events are served redacted to
-- those who were not in the room when they were sent, and to other servers.
CREATE TABLE erased_users (
    user_id TEXT PRIMARY KEY,
    erased_ts BIGINT NOT NULL
);
