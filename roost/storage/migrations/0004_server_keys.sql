-- Server signing keys: the verify keys of other servers, and this server's own
-- keys over time.

-- One row per (server, key id) this server has learnt, directly from the
-- server or through a notary. valid_until_ts is how late a signature may have
-- been made for the key to vouch for it: the response's valid_until_ts (capped
-- at seven days after fetching, as the spec requires) for a current key, or
-- the key's expired_ts for an old one. key_json is the server's own signed
-- /_matrix/key/v2/server response that listed the key (with only the
-- server's own signatures), kept so that this server can act as a notary and
-- still answer for a server that has gone offline.
CREATE TABLE remote_server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    from_server TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- This server's own keys. The one in use has expired_ts NULL; a key replaced
-- by an operator keeps its row with the time it stopped being used, and is
-- published as an old_verify_key so that events it signed still verify.
CREATE TABLE local_server_keys (
    key_id TEXT PRIMARY KEY,
    verify_key TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expired_ts BIGINT
);
