"""The homeserver configuration: one frozen, typed dataclass per YAML section.

Loading is strict on purpose: a misspelt key silently ignored is a setting the
operator believes is in force and is not. Every error names the YAML path of
the offending key, so that one line is enough to fix it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from roost.rooms.versions import KNOWN_ROOM_VERSIONS


class ConfigError(Exception):
    """A configuration problem, phrased as one line naming the key."""


class Duration(int):
    """Milliseconds, written in YAML as an integer of ms or as '15m', '7d', '30s'."""


_DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION_RE = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)?\s*$")


def _parse_duration(path: str, value: Any) -> Duration:
    if isinstance(value, bool):
        raise ConfigError(f"{path}: expected a duration such as '15m' or milliseconds, got {value!r}")
    if isinstance(value, int):
        return Duration(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return Duration(int(match.group(1)) * _DURATION_UNITS[match.group(2) or "ms"])
    raise ConfigError(f"{path}: expected a duration such as '15m' or milliseconds, got {value!r}")


@dataclass(frozen=True)
class ClientListenerConfig:
    bind_address: str = "127.0.0.1"
    port: int = 8008
    # Requests whose body is larger than this are refused with M_TOO_LARGE
    # before the body is read whole.
    max_body_bytes: int = 10 * 1024 * 1024
    # Behind a reverse proxy on this machine: take the client's address from the
    # X-Forwarded-For header the proxy sets (contrib/nginx/roost.conf).
    x_forwarded: bool = False


@dataclass(frozen=True)
class FederationListenerConfig:
    enabled: bool = False
    bind_address: str = "0.0.0.0"
    port: int = 8448
    tls_certificate_path: str | None = None
    tls_private_key_path: str | None = None


@dataclass(frozen=True)
class MetricsListenerConfig:
    # Prometheus metrics over plain HTTP at /metrics; keep it on a private address.
    enabled: bool = False
    bind_address: str = "127.0.0.1"
    port: int = 9101


@dataclass(frozen=True)
class ListenersConfig:
    client: ClientListenerConfig = field(default_factory=ClientListenerConfig)
    federation: FederationListenerConfig = field(default_factory=FederationListenerConfig)
    metrics: MetricsListenerConfig = field(default_factory=MetricsListenerConfig)


@dataclass(frozen=True)
class DatabaseConfig:
    # A libpq connection string; None starts an embedded PostgreSQL in data_dir.
    dsn: str | None = None
    pool_min: int = 2
    pool_max: int = 10


@dataclass(frozen=True)
class RedisConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    password: str | None = None
    # Prefix for every key Roost writes, so that several deployments (or tests)
    # can share one Redis.
    key_prefix: str = "roost:"


@dataclass(frozen=True)
class RegistrationConfig:
    enabled: bool = False
    # With a shared secret, `roost register-user` and the admin registration API
    # can create users even when open registration is off.
    shared_secret: str | None = None
    # Whether registering asks for a registration token (`roost registration-token`).
    require_token: bool = False
    # Whether anyone may get a guest account (POST /register?kind=guest).
    allow_guests: bool = False


@dataclass(frozen=True)
class TokensConfig:
    # Lifetime of access tokens for clients that asked for a refresh token.
    access_token_lifetime: Duration = Duration(15 * 60_000)
    refresh_token_lifetime: Duration = Duration(7 * 86_400_000)
    # File holding the secret that signs access tokens; made at first start.
    secret_path: str | None = None


@dataclass(frozen=True)
class PasswordsConfig:
    # bcrypt cost; each step doubles the work of a login. Tests lower it.
    bcrypt_rounds: int = 12


@dataclass(frozen=True)
class RateLimitConfig:
    per_second: float = 1.0
    burst: int = 10


@dataclass(frozen=True)
class RateLimitsConfig:
    login: RateLimitConfig = field(default_factory=lambda: RateLimitConfig(0.2, 5))
    registration: RateLimitConfig = field(default_factory=lambda: RateLimitConfig(0.2, 5))
    message: RateLimitConfig = field(default_factory=lambda: RateLimitConfig(10.0, 50))
    # Media uploads, /create and URL previews, per user.
    media: RateLimitConfig = field(default_factory=lambda: RateLimitConfig(10.0, 50))


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    # None logs to standard output.
    file: str | None = None


@dataclass(frozen=True)
class RoomsConfig:
    default_version: str = "12"


@dataclass(frozen=True)
class TrustedKeyServerConfig:
    server_name: str = ""
    verify_keys: dict[str, str] = field(default_factory=dict)


# Every IANA special-purpose range (the IPv4 and IPv6 Special-Purpose Address
# Registries), plus multicast and the reserved blocks: no outbound request
# (federation, keys, media, previews, push) may reach them by default.
# IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry.
SPECIAL_PURPOSE_RANGES = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24",
    "192.88.99.0/24", "192.168.0.0/16", "192.175.48.0/24", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128", "::1/128", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64",
    "2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20", "5f00::/16", "fc00::/7",
    "fe80::/10", "fec0::/10", "ff00::/8",
)


@dataclass(frozen=True)
class FederationConfig:
    trusted_key_servers: list[TrustedKeyServerConfig] = field(default_factory=list)
    verify_certificates: bool = True
    # A PEM file of extra certificate authorities trusted for outbound federation.
    ca_file: str | None = None
    # Outbound requests to these ranges are refused; empty it only for tests on loopback.
    ip_range_blocklist: list[str] = field(
        default_factory=lambda: list(SPECIAL_PURPOSE_RANGES))
    min_retry_interval: Duration = Duration(10_000)
    max_retry_interval: Duration = Duration(3_600_000)


@dataclass(frozen=True)
class PushConfig:
    """Delivery to push gateways: the first retry after a failure, doubling up to the maximum."""

    min_retry_interval: Duration = Duration(1_000)
    max_retry_interval: Duration = Duration(600_000)
    # Gateways at these addresses are never contacted; None: federation.ip_range_blocklist.
    ip_range_blocklist: list[str] | None = None


@dataclass(frozen=True)
class ThumbnailSizeConfig:
    width: int = 0
    height: int = 0
    # "crop" (exactly width x height, cut to fit) or "scale" (fits inside, aspect kept).
    method: str = "scale"


@dataclass(frozen=True)
class UrlPreviewConfig:
    # Off by default: a preview makes this server fetch any URL a user names.
    enabled: bool = False
    # Addresses previews must never fetch from; None: federation.ip_range_blocklist.
    ip_range_blocklist: list[str] | None = None
    max_bytes: int = 10 * 1024 * 1024
    timeout: Duration = Duration(10_000)


@dataclass(frozen=True)
class MediaConfig:
    max_upload_size: int = 50 * 1024 * 1024
    # Ids reserved with /create and not yet uploaded, per user; and how long one lasts.
    max_pending_uploads: int = 10
    unused_expiry: Duration = Duration(86_400_000)
    # Serve the old unauthenticated /_matrix/media/v3/download and /thumbnail. Media
    # that arrives while this is off is never served there, even once it is on again.
    legacy_unauthenticated_media: bool = False
    # Remote media kept here; the least recently used goes first when this is passed.
    remote_cache_max_bytes: int = 1024 * 1024 * 1024
    # Images with more pixels than this are not decoded (decompression bombs).
    max_image_pixels: int = 32_000_000
    thumbnail_sizes: list[ThumbnailSizeConfig] = field(default_factory=lambda: [
        ThumbnailSizeConfig(32, 32, "crop"), ThumbnailSizeConfig(96, 96, "crop"),
        ThumbnailSizeConfig(320, 240, "scale"), ThumbnailSizeConfig(640, 480, "scale"),
        ThumbnailSizeConfig(800, 600, "scale"),
    ])
    url_preview: UrlPreviewConfig = field(default_factory=UrlPreviewConfig)


@dataclass(frozen=True)
class SupportContactConfig:
    # m.role.admin, m.role.security, or a namespaced role of your own.
    role: str = "m.role.admin"
    matrix_id: str | None = None
    email_address: str | None = None


@dataclass(frozen=True)
class SupportConfig:
    # Who to contact about this server (GET /.well-known/matrix/support); with no
    # contacts and no page that answers 404.
    contacts: list[SupportContactConfig] = field(default_factory=list)
    page: str | None = None


@dataclass(frozen=True)
class VoipConfig:
    # TURN server URIs handed to clients by GET /voip/turnServer; none: the answer is {}.
    turn_uris: list[str] = field(default_factory=list)
    # coturn's `static-auth-secret` (use-auth-secret): credentials are made from it.
    turn_shared_secret: str | None = None
    # How long the credentials stay valid.
    turn_user_lifetime: Duration = Duration(86_400_000)
    # Whether guest accounts get TURN credentials.
    turn_allow_guests: bool = True


# What a process may do (docs/deployment.md, "Several processes"). Every process
# without a `workers` section runs all of them.
ROLES = ("client", "event_writer", "federation_inbound", "federation_sender", "media",
         "pusher", "appservice", "background")
# Stream followers that must run in exactly one process: two would each act on every
# event (two pushes, two bridge transactions, two index rows).
SINGLETON_ROLES = ("pusher", "appservice", "background")
# The instance name of a command run beside the instances (no instance may be named so).
TOOL = "(tool)"


@dataclass(frozen=True)
class InternalListenerConfig:
    # Where this instance takes forwarded room writes (event writers only). Plain HTTP
    # with the shared secret: keep it on loopback or a private network.
    bind_address: str = "127.0.0.1"
    port: int = 0
    # The address the other instances connect to; None: bind_address.
    host: str | None = None


@dataclass(frozen=True)
class WorkerInstanceConfig:
    roles: list[str] = field(default_factory=list)
    # This instance's listeners, merged key by key over the top-level `listeners`.
    listeners: ListenersConfig | None = None
    internal: InternalListenerConfig = field(default_factory=InternalListenerConfig)


@dataclass(frozen=True)
class WorkersConfig:
    # Sent by instances to each other's internal listener; required with instances.
    shared_secret: str | None = None
    instances: dict[str, WorkerInstanceConfig] = field(default_factory=dict)
    # The rooms' writers: room -> event_writers[stable hash of the room id % count].
    # Changing this list moves rooms; stop every writer first.
    event_writers: list[str] = field(default_factory=list)
    # The outbound federation senders: destination -> one of them, by a stable hash.
    federation_senders: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RoostConfig:
    server_name: str
    public_baseurl: str | None = None
    data_dir: str = "./data"
    signing_key_path: str | None = None
    listeners: ListenersConfig = field(default_factory=ListenersConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    tokens: TokensConfig = field(default_factory=TokensConfig)
    passwords: PasswordsConfig = field(default_factory=PasswordsConfig)
    rate_limits: RateLimitsConfig = field(default_factory=RateLimitsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    rooms: RoomsConfig = field(default_factory=RoomsConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    push: PushConfig = field(default_factory=PushConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    voip: VoipConfig = field(default_factory=VoipConfig)
    support: SupportConfig = field(default_factory=SupportConfig)
    # Application service (bridge) registration files, relative to the configuration.
    app_service_config_files: list[str] = field(default_factory=list)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    # Where this config was loaded from; relative paths are taken from there.
    config_dir: str = "."
    # The instance of `workers.instances` this process is (`--worker`); None: the one
    # process that runs every role.
    worker: str | None = None

    @property
    def roles(self) -> frozenset[str]:
        """The roles this process runs."""
        if self.worker is None:
            return frozenset(ROLES)
        if self.worker == TOOL:
            return frozenset()
        return frozenset(self.workers.instances[self.worker].roles)

    def for_tool(self) -> RoostConfig:
        """This configuration as a command (`roost register-user`, `roost room`) runs it:
        beside running instances it follows no stream and forwards room writes."""
        return dataclasses.replace(self, worker=TOOL) if self.workers.instances else self

    def for_worker(self, name: str | None) -> RoostConfig:
        """This configuration as instance `name` runs it: its roles and its listeners."""
        instances = self.workers.instances
        if name is None:
            if instances:
                raise ConfigError("workers.instances: this configuration has instances"
                                  f" ({', '.join(instances)}): name one with --worker")
            return self
        if name not in instances:
            known = ", ".join(instances) or "none"
            raise ConfigError(f"workers.instances.{name}: no such instance (known: {known})")
        listeners = instances[name].listeners or self.listeners
        return dataclasses.replace(self, worker=name, listeners=listeners)

    def path(self, relative: str) -> str:
        """A path from the config, resolved against the config file's folder."""
        return os.path.normpath(os.path.join(self.config_dir, os.path.expanduser(relative)))

    @property
    def signing_key_file(self) -> str:
        name = self.signing_key_path or os.path.join(self.data_dir, f"{self.server_name}.signing.key")
        return self.path(name)

    @property
    def token_secret_file(self) -> str:
        return self.path(self.tokens.secret_path or os.path.join(self.data_dir, "token.secret"))

    @property
    def baseurl(self) -> str:
        if self.public_baseurl:
            return self.public_baseurl.rstrip("/") + "/"
        return f"http://localhost:{self.listeners.client.port}/"


def _type_name(tp: Any) -> str:
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, str(tp))


def _convert(path: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is Duration:
        return _parse_duration(path, value)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(path, inner[0], value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return _build(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(f"{path}[{i}]", item, v) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp)
        return {str(k): _convert(f"{path}.{k}", vt, v) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{path}: expected integer, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    return value


_NOT_IN_YAML = ("config_dir", "worker")


def _build(cls: Any, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name not in _NOT_IN_YAML}
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{where}: unknown configuration key")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                where = f"{prefix}.{f.name}" if prefix else f.name
                raise ConfigError(f"{where}: missing required configuration key")
            continue
        where = f"{prefix}.{f.name}" if prefix else f.name
        kwargs[f.name] = _convert(where, hints[f.name], data[f.name])
    return cls(**kwargs)


def parse_config(data: Any, config_dir: str = ".") -> RoostConfig:
    """Validate a parsed YAML document and build the configuration."""
    if not isinstance(data, dict):
        raise ConfigError("(top level): expected a mapping of configuration keys")
    config = _build(RoostConfig, _merge_instance_listeners(data))
    config = dataclasses.replace(config, config_dir=config_dir)
    _check(config)
    return config


def _merge_instance_listeners(data: dict[str, Any]) -> dict[str, Any]:
    """Each instance's `listeners` laid key by key over the top-level ones, so an instance
    names only what differs (its ports) and errors still name the instance's path."""
    workers = data.get("workers")
    if not isinstance(workers, dict) or not isinstance(workers.get("instances"), dict):
        return data
    base = data.get("listeners") or {}
    instances = {}
    for name, instance in workers["instances"].items():
        if isinstance(instance, dict) and isinstance(instance.get("listeners"), dict):
            instance = {**instance, "listeners": _deep_merge(base, instance["listeners"])}
        instances[name] = instance
    return {**data, "workers": {**workers, "instances": instances}}


def _deep_merge(base: Any, over: Any) -> Any:
    if not isinstance(base, dict) or not isinstance(over, dict):
        return over
    return {**base, **{k: _deep_merge(base.get(k), v) for k, v in over.items()}}


def _check_workers(workers: WorkersConfig) -> None:
    """Every role known, each singleton follower in exactly one instance, the shard lists
    naming instances with that role, writers reachable, a secret to authenticate them."""
    instances = workers.instances
    if not instances:
        for key in ("event_writers", "federation_senders"):
            if getattr(workers, key):
                raise ConfigError(f"workers.{key}: needs workers.instances")
        return
    if not workers.shared_secret:
        raise ConfigError("workers.shared_secret: required when workers.instances is set")
    for name, instance in instances.items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise ConfigError(f"workers.instances.{name}: a name is 1-64 of A-Z a-z 0-9 _ . -")
        for i, role in enumerate(instance.roles):
            if role not in ROLES:
                raise ConfigError(f"workers.instances.{name}.roles[{i}]: unknown role {role!r}"
                                  f" (roles: {', '.join(ROLES)})")
    for role in SINGLETON_ROLES:
        having = [n for n, i in instances.items() if role in i.roles]
        if len(having) != 1:
            raise ConfigError(f"workers.instances: role {role} must be in exactly one instance"
                              f" (found in {len(having)}: {', '.join(having) or 'none'})")
    for key, role in (("event_writers", "event_writer"),
                      ("federation_senders", "federation_sender")):
        listed: list[str] = getattr(workers, key)
        for i, name in enumerate(listed):
            if name not in instances:
                raise ConfigError(f"workers.{key}[{i}]: no instance named {name!r}")
            if listed.index(name) != i:
                raise ConfigError(f"workers.{key}[{i}]: {name} is listed twice")
        having = [n for n, i in instances.items() if role in i.roles]
        if sorted(having) != sorted(listed) or not listed:
            raise ConfigError(f"workers.{key}: must list exactly the instances with role {role}"
                              f" (listed {listed}, with the role {having})")
    for name in workers.event_writers:
        if not 0 < instances[name].internal.port < 65536:
            raise ConfigError(f"workers.instances.{name}.internal.port: an event writer needs"
                              " its internal listener's port")


_SERVER_NAME_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")


def _check(config: RoostConfig) -> None:
    if not _SERVER_NAME_RE.match(config.server_name):
        raise ConfigError(f"server_name: {config.server_name!r} is not a valid server name")
    _check_listeners(config, config.listeners, "listeners")
    for worker, instance in config.workers.instances.items():
        if instance.listeners is not None:
            _check_listeners(config, instance.listeners, f"workers.instances.{worker}.listeners")
    if config.rooms.default_version not in KNOWN_ROOM_VERSIONS:
        raise ConfigError(f"rooms.default_version: {config.rooms.default_version!r} is not a"
                          f" room version this server knows (1 to 12)")
    if config.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"logging.level: unknown level {config.logging.level!r}")
    for i, size in enumerate(config.media.thumbnail_sizes):
        if size.method not in ("crop", "scale") or size.width < 1 or size.height < 1:
            raise ConfigError(f"media.thumbnail_sizes[{i}]: needs width and height >= 1 and"
                              " method crop or scale")
    for i, contact in enumerate(config.support.contacts):
        if not contact.matrix_id and not contact.email_address:
            raise ConfigError(f"support.contacts[{i}]: needs a matrix_id or an email_address")
    if config.media.max_upload_size < 1:
        raise ConfigError("media.max_upload_size: must be at least 1")
    _check_workers(config.workers)
    if config.workers.instances and not config.redis.enabled:
        raise ConfigError("redis.enabled: must be true with workers.instances (the instances"
                          " share stream positions and wake-ups over Redis)")
    if config.database.pool_min < 1 or config.database.pool_max < config.database.pool_min:
        raise ConfigError("database.pool_max: must be at least database.pool_min, which must be >= 1")


def _check_listeners(config: RoostConfig, listeners: ListenersConfig, where: str) -> None:
    fed = listeners.federation
    for name in ("tls_certificate_path", "tls_private_key_path"):
        value = getattr(fed, name)
        if fed.enabled and not value:
            raise ConfigError(f"{where}.federation.{name}: required when federation is enabled")
        if fed.enabled and not os.path.isfile(config.path(value)):
            raise ConfigError(f"{where}.federation.{name}: file not found: {value}")


def load_config(path: str) -> RoostConfig:
    """Read and validate a configuration file, naming the file if it is missing."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_config(data, os.path.dirname(os.path.abspath(path)))
