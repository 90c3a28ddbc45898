-- The media repository's metadata (the bytes live in files under data_dir,
-- roost/media/store.py). One row per piece of media, local or a cached copy of
-- remote media, keyed as its mxc:// URI is: (origin server, media id).

CREATE TABLE media (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    is_local BOOLEAN NOT NULL,
    -- The uploader (local media only).
    user_id TEXT,
    -- NULL while a /create'd id waits for its bytes.
    media_type TEXT,
    upload_name TEXT,
    media_length BIGINT,
    created_ts BIGINT NOT NULL,
    -- A /create'd id not uploaded by then is forgotten.
    unused_expires_ts BIGINT,
    uploaded_ts BIGINT,
    last_access_ts BIGINT NOT NULL,
    -- May be served by the old unauthenticated /_matrix/media/v3 endpoints:
    -- the switch's value when the media arrived (the spec's "freeze").
    unauthenticated BOOLEAN NOT NULL DEFAULT FALSE,
    quarantined_by TEXT,
    PRIMARY KEY (server_name, media_id)
);

-- Pending uploads per user (the limit on /create) and expiry.
CREATE INDEX media_pending_by_user ON media (user_id, unused_expires_ts)
    WHERE uploaded_ts IS NULL;
-- The remote cache is evicted least recently used first.
CREATE INDEX media_remote_by_access ON media (last_access_ts)
    WHERE NOT is_local;

CREATE TABLE media_thumbnails (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    animated BOOLEAN NOT NULL,
    media_type TEXT NOT NULL,
    media_length BIGINT NOT NULL,
    PRIMARY KEY (server_name, media_id, width, height, method, animated),
    FOREIGN KEY (server_name, media_id) REFERENCES media (server_name, media_id)
        ON DELETE CASCADE
);
