-- Backfilled history takes stream positions below zero, handed out downwards: the
-- search indexer follows them too, from the lowest position it has indexed.
ALTER TABLE event_search_position ADD COLUMN backfill_ordering BIGINT NOT NULL DEFAULT 0;
