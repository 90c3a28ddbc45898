-- Each writer's persisted-up-to position per stream (issue 17): every write of that
-- instance at or below it has committed, and its later writes will be above it.
-- Processes that start, or come back after losing Redis, read where every writer is.
CREATE TABLE stream_positions (
    stream TEXT NOT NULL,
    instance TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (stream, instance)
);
