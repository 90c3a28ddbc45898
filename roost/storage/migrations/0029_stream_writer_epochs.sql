-- Fencing of stream writers (issue 17): each (stream, instance) row carries an epoch,
-- bumped when the instance registers as a writer (starts) and when the other processes
-- retire it (take it for dead and pass its position). A writer's persisting transaction
-- reads its row FOR KEY SHARE and commits only if the epoch is still the one it started
-- with; a retirement takes the row FOR UPDATE, so the two are ordered: a writer that was
-- passed can no longer commit below the readers.
ALTER TABLE stream_positions ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
