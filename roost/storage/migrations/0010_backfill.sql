-- Backfilled history: events fetched from other servers that lie before
-- everything this server held of a room. They take stream positions below zero,
-- allocated downwards, so that they sort before the room's first local stream
-- event in /messages (whose `s<N>` tokens are plain stream positions) while the
-- live readers of the events stream (/sync, the socket, the federation sender),
-- which only ever read above a position they already hold, never see them.
CREATE SEQUENCE backfill_stream_ordering INCREMENT BY -1 MAXVALUE -1 START WITH -1;
