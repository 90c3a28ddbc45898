-- Registration: guest accounts and registration tokens.

-- Guests are accounts without a password that may use only part of the client
-- API (roost/client_api/guests.py) and join only rooms that allow guests.
ALTER TABLE users ADD COLUMN is_guest BOOLEAN NOT NULL DEFAULT FALSE;

-- Tokens that let someone register when the server asks for one
-- (m.login.registration_token). Made with `roost registration-token` or by the
-- admin API. A use is counted when the account it let in is created, in the
-- same transaction, so a token of N uses lets in at most N accounts.
CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed INTEGER,          -- NULL: any number of uses
    completed INTEGER NOT NULL DEFAULT 0,
    expiry_time BIGINT,            -- milliseconds since the epoch; NULL: never expires
    created_ts BIGINT NOT NULL
);
