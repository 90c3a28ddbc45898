-- Joins and leaves another server made through this one (served /send_join and
-- /send_leave). The joining server hands its event only to the resident server
-- it asked; the resident passes it on to the other servers in the room.
--
-- A row is written before the event is stored, so when the federation sender
-- reads the event from the events stream the row is already there: it queues
-- the event for the room's servers (less the origin) as it does a local event,
-- and deletes the row in the same transaction. A restart loses nothing.
CREATE TABLE federation_relayed_events (
    event_id TEXT PRIMARY KEY,
    origin TEXT NOT NULL
);
