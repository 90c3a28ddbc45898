-- Single-use login tokens (POST /login/get_token, then m.login.token): kept as hashes,
-- deleted by the login that uses them.
CREATE TABLE login_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX login_tokens_by_expiry ON login_tokens (expires_ts);
