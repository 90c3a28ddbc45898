"""The commented configuration that `roost generate-config` writes.

The repository's homeserver.yaml is the same template filled in for local
development; a test keeps the two loadable.
"""

from __future__ import annotations

TEMPLATE = """\
# Roost homeserver configuration. Relative paths are taken from this file's folder.
# Every key is checked at start: an unknown key or a wrong type stops the server.

# The name users and other servers know this server by: @alice:{server_name}.
server_name: "{server_name}"

# The URL clients reach the client API at (used by /.well-known/matrix/client).
public_baseurl: "{public_baseurl}"

# Where Roost keeps its own files: the embedded PostgreSQL, the token secret.
data_dir: "{data_dir}"

# This server's ed25519 signing key, in Synapse's key-file format. Made at first start.
signing_key_path: "{signing_key_path}"

listeners:
  client:
    bind_address: "127.0.0.1"
    port: {client_port}
    # Bodies larger than this are refused with M_TOO_LARGE while they arrive.
    max_body_bytes: 10485760
  federation:
    # HTTPS for other servers; needs a certificate and key.
    enabled: {federation_enabled}
    bind_address: "0.0.0.0"
    port: 8448
    tls_certificate_path: {tls_cert}
    tls_private_key_path: {tls_key}
  metrics:
    # Prometheus metrics (plain HTTP, GET /metrics), unauthenticated: keep it private.
    enabled: false
    bind_address: "127.0.0.1"
    port: 9101

database:
  # A libpq connection string, e.g. "host=127.0.0.1 dbname=roost user=roost".
  # null: start an embedded PostgreSQL under data_dir.
  dsn: null
  pool_min: 2
  pool_max: 10

redis:
  # Needed only when several Roost processes share state (rate limits, wake-ups).
  enabled: false
  host: "127.0.0.1"
  port: 6379

registration:
  # Whether anyone who can reach the client API may create an account.
  enabled: {registration_enabled}
  # With a secret, `roost register-user` and the admin API can create users anyway.
  shared_secret: null

tokens:
  # For clients that ask for refresh tokens; others get tokens that do not expire.
  access_token_lifetime: 15m
  refresh_token_lifetime: 7d

passwords:
  # bcrypt cost of stored password hashes (each step doubles the work of a login).
  bcrypt_rounds: 12

rate_limits:
  # Token buckets: a steady rate per second and a burst allowance.
  login: {{per_second: 0.2, burst: 5}}
  registration: {{per_second: 0.2, burst: 5}}
  message: {{per_second: 10, burst: 50}}
  media: {{per_second: 10, burst: 50}}

rooms:
  # The room version of new rooms.
  default_version: "12"

media:
  # Uploads larger than this (bytes) get 413 M_TOO_LARGE.
  max_upload_size: 52428800
  # /create'd ids waiting for their upload, per user, and how long one is kept.
  max_pending_uploads: 10
  unused_expiry: 24h
  # Serve the old unauthenticated /_matrix/media/v3/download and /thumbnail (only
  # media that arrived while this was on).
  legacy_unauthenticated_media: false
  # Remote media cached here, least recently used evicted first (bytes).
  remote_cache_max_bytes: 1073741824
  # Larger images are not thumbnailed (decompression bombs).
  max_image_pixels: 32000000
  url_preview:
    # Off by default: previews make this server fetch any URL a user names.
    enabled: false
    # null: the same ranges as federation.ip_range_blocklist.
    ip_range_blocklist: null
    max_bytes: 10485760
    timeout: 10s

logging:
  level: INFO
  # null logs to standard output.
  file: null
"""


def render_config(
    server_name: str,
    *,
    data_dir: str = "./data",
    client_port: int = 8008,
    public_baseurl: str | None = None,
    registration_enabled: bool = False,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> str:
    return TEMPLATE.format(
        server_name=server_name,
        public_baseurl=public_baseurl or f"http://localhost:{client_port}/",
        data_dir=data_dir,
        signing_key_path=f"{data_dir}/{server_name.replace(':', '_')}.signing.key",
        client_port=client_port,
        federation_enabled="true" if tls_cert else "false",
        tls_cert=f'"{tls_cert}"' if tls_cert else "null",
        tls_key=f'"{tls_key}"' if tls_key else "null",
        registration_enabled="true" if registration_enabled else "false",
    )
