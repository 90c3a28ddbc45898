-- Push: users' rules, the actions evaluation left for each user and event
-- (what notification counts and GET /notifications read), and pushers.

-- User-defined rules; `priority` orders the rules of one kind (lowest first).
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    priority INTEGER NOT NULL,
    conditions TEXT,
    pattern TEXT,
    actions TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- What a user changed of a server-default rule (NULL: unchanged).
CREATE TABLE push_rule_defaults (
    user_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled BOOLEAN,
    actions TEXT,
    PRIMARY KEY (user_id, rule_id)
);

-- How far the evaluator has read the events stream.
CREATE TABLE push_evaluator_position (
    lock CHAR(1) PRIMARY KEY DEFAULT 'X' CHECK (lock = 'X'),
    stream_position BIGINT NOT NULL
);

-- One row per user and event whose actions notify. thread_id is 'main' for the
-- main timeline, else the thread root.
CREATE TABLE push_actions (
    user_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    actions TEXT NOT NULL,
    highlight BOOLEAN NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_ordering)
);
CREATE INDEX push_actions_room ON push_actions (user_id, room_id, stream_ordering);

-- A user's own newest event per room and thread: sending reads up to it.
CREATE TABLE push_own_reads (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
);

-- Pushers (kind http); `last_stream_ordering` is how far delivery got.
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    device_id TEXT,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    last_stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_key ON pushers (app_id, pushkey);
