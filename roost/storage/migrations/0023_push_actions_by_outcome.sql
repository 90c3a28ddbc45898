-- Push actions become one row per event and outcome, naming the users it is for (a row
-- per user and event cost a busy room's every message fifty inserts). Nothing in the
-- old table is worth keeping: notification counts restart from here.

DROP TABLE push_actions;

-- The notifying outcomes of evaluating an event: one row per distinct outcome
-- (usually one: every member with the default rules gets the same actions; a
-- mentioned user gets a second), naming the users it is for. thread_id is
-- 'main' for the main timeline, else the thread root.
CREATE TABLE push_actions (
    stream_ordering BIGINT NOT NULL,
    n SMALLINT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    actions TEXT NOT NULL,
    highlight BOOLEAN NOT NULL,
    ts BIGINT NOT NULL,
    user_ids TEXT[] NOT NULL,
    PRIMARY KEY (stream_ordering, n)
);
CREATE INDEX push_actions_room ON push_actions (room_id, stream_ordering);

