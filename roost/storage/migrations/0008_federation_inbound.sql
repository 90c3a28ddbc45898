-- Inbound federation: transactions received, the state group that is a room's
-- current state after remote events, and invites of local users to remote rooms.

-- PUT /send/{txnId} is idempotent per (origin, txn id): a repeated transaction
-- gets the first answer without being processed again.
CREATE TABLE federation_inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_txns_ts ON federation_inbound_txns (received_ts);

-- After remote events (a fork merged by state resolution, a soft-failed or
-- rejected event persisted last) the room's current state may be a group no
-- event points at. The engine records it here with the stream position it was
-- current at; a row newer than the room's last event wins when the room's head
-- is loaded.
CREATE TABLE room_state_heads (
    room_id TEXT PRIMARY KEY,
    state_group BIGINT NOT NULL,
    stream_ordering BIGINT NOT NULL
);

-- Invites of local users to rooms on other servers, with the stripped state
-- the inviting server sent (invite_room_state), as JSON text.
CREATE TABLE remote_invites (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    invite_room_state TEXT NOT NULL
);
CREATE INDEX remote_invites_user ON remote_invites (user_id, room_id);
