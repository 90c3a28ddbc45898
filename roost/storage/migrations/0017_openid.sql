-- OpenID tokens (POST /user/{userId}/openid/request_token): a third party shows
-- one to GET /_matrix/federation/v1/openid/userinfo to learn who holds it.
CREATE TABLE openid_tokens (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_by_expiry ON openid_tokens (expires_ts);
