"""Builds the homeserver explicitly: each part gets exactly what it uses.

This is the only module that knows every package. There is no service
locator: the `Homeserver` record below is used by the root service, the CLI
and tests, and never passed down into the parts it holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, task, threads
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource

from roost.admin import media as admin_media
from roost.admin.auth import AdminGate
from roost.appservice.registration import load_registrations
from roost.client_api import (
    account,
    account_data,
    capabilities,
    devices,
    directory,
    hierarchy,
    knock,
    login,
    messages,
    presence,
    profile,
    receipts,
    register,
    relations,
    room_state,
    room_summary,
    rooms,
    send,
    sync,
    thirdparty,
    typing,
    upgrade,
    user_directory,
    versions,
    websocket,
)
from roost.client_api import login_tokens as login_tokens_api
from roost.client_api.accounts import Accounts
from roost.client_api.appservice import AppServiceAuth, AppServices
from roost.client_api.login_tokens import LoginTokens
from roost.client_api.passwords import PasswordHasher
from roost.client_api.presence import PresenceTracker
from roost.client_api.profile import Profiles
from roost.client_api.resource import JsonResource, RateLimit, RoostSite, Router
from roost.client_api.room_view import RoomView
from roost.client_api.rooms import RoomCreation
from roost.client_api.sync_builder import SyncBuilder
from roost.client_api.tokens import TokenAuthority, load_or_create_secret
from roost.client_api.uia import UserInteractiveAuth
from roost.federation import hierarchy as federation_hierarchy
from roost.federation import served as federation_served
from roost.federation.backfill import Backfiller
from roost.federation.fetches import EventFetches
from roost.federation.ingest import EduSinks
from roost.federation.joins import RemoteRooms
from roost.federation.remote_queries import RemoteQueries
from roost.federation.sender import EduSources, FederationSender
from roost.federation.transport import key_resource
from roost.federation.transport.client import (
    FederationClient,
    FederationKeyFetcher,
    build_federation_client,
)
from roost.federation.transport.server import (
    FederationResource,
    FederationRouter,
    federation_site,
    register_version,
)
from roost.homeserver.client_extras import register_client_extras
from roost.homeserver.config import RoostConfig
from roost.homeserver.features import PushParts, build_e2ee, build_push, register_media
from roost.homeserver.operations import (
    AdminParts,
    erase_hook,
    health_checks,
    register_admin,
    start_appservices,
    start_metrics,
)
from roost.homeserver.replication_wiring import StreamWiring
from roost.homeserver.roles import MAIN, Roles
from roost.homeserver.session_wiring import wire_session_revocations
from roost.homeserver.wiring_roles import (
    build_engine,
    destination_shard,
    federation_wakeups,
    follow_federation_wakeups,
    internal_site,
    sender_store,
    watch_other_writers,
)
from roost.keys.local import LocalKey, load_or_create_signing_key
from roost.keys.remote import KeyRing, Notary
from roost.keys.resource import KeyServer
from roost.media.repository import MediaRepository
from roost.rooms.access import RoomAccess
from roost.rooms.engine import NewEvent, RoomEngine, RoomError
from roost.rooms.hierarchy import SpaceHierarchy
from roost.storage.accounts import UserStore
from roost.storage.database import Database, application_name
from roost.storage.devices import DeviceStore
from roost.storage.directory import DirectoryStore
from roost.storage.embedded import start_embedded_postgres
from roost.storage.erasure import ErasureStore
from roost.storage.events import EventStore, SyncEventStore
from roost.storage.federation_inbound import FederationInboundStore
from roost.storage.login_tokens import LoginTokenStore
from roost.storage.migrations import migrate
from roost.storage.notifier import Notifier
from roost.storage.profiles import ProfileStore
from roost.storage.ratelimit import InMemoryRateLimiter, RateLimiter, RedisRateLimiter
from roost.storage.registration_tokens import RegistrationTokenStore
from roost.storage.relations import RelationStore
from roost.storage.room_pages import RoomPageStore
from roost.storage.room_state import RoomStateStore, UserRoomsCache
from roost.storage.server_keys import ServerKeyStore
from roost.storage.streams import StreamIdGenerator
from roost.storage.sync_data import AccountDataStore, FilterStore, ReceiptStore
from roost.storage.sync_queries import SyncQueries

logger = logging.getLogger(__name__)


@dataclass
class FederationParts:
    """What serves and speaks federation: the listener's site and the outbound client."""

    site: Any
    router: FederationRouter
    client: FederationClient
    keyring: KeyRing
    key_server: KeyServer
    # Called with the origin of every authenticated inbound request (it is evidently up).
    on_authenticated: list[Any] = field(default_factory=list)
    sender: FederationSender | None = None
    # Events fetched from other servers (and fetched again), for metrics and tests.
    fetches: EventFetches = field(default_factory=EventFetches)


@dataclass
class Homeserver:
    config: RoostConfig
    reactor: Any
    clock: IReactorTime
    db: Database
    local_key: LocalKey
    client_site: RoostSite
    accounts: Accounts
    tokens: TokenAuthority
    engine: RoomEngine
    notifier: Notifier
    streams: dict[str, StreamIdGenerator]
    # Things to stop, last started first: (name, zero-argument callable).
    closers: list[tuple[str, Any]] = field(default_factory=list)
    profiles: Profiles | None = None
    presence: PresenceTracker | None = None
    federation: FederationParts | None = None
    # This server's Prometheus registry when the metrics listener is enabled, else None.
    metrics: Any = None
    # The /sync builder: areas add sections, room fields and streams to it
    # (client_api/sync_extensions.py) in their own _register_<area>.
    sync_builder: SyncBuilder | None = None
    media: MediaRepository | None = None
    push: PushParts | None = None
    # The admin API's parts, for the `roost user` and `roost room` commands.
    admin: AdminParts | None = None
    # An event writer's internal listener (forwarded room writes), when there are several.
    internal_site: Any = None
    # The shared streams and their bus (storage/shared_streams.Replication), when several.
    replication: Any = None

    async def register_user(self, name: str, password: str, admin: bool = False) -> str:
        """Create a user regardless of whether open registration is on (the CLI's path)."""
        return await self.accounts.create(self.accounts.user_id_for(name), password, admin)


async def open_database(config: RoostConfig, reactor: Any, dsn: str | None = None) -> tuple[Database, Any]:
    """Connect to the configured database, or start the embedded one; migrate it."""
    embedded = None
    dsn = dsn or config.database.dsn
    if dsn is None:
        dsn, embedded = await threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), start_embedded_postgres, config.path(config.data_dir)
        )
    db = Database(reactor, dsn, config.database.pool_min, config.database.pool_max,
                  application_name=application_name(config.worker or MAIN))
    try:
        await migrate(db)
    except Exception:
        db.close()
        if embedded is not None:
            embedded.cleanup()
        raise
    return db, embedded


async def _rate_limiter(config: RoostConfig, reactor: Any, clock: IReactorTime,
                        closers: list[tuple[str, Any]]) -> RateLimiter:
    if not config.redis.enabled:
        return InMemoryRateLimiter(clock)
    # Imported here: txredisapi and its dependencies are about 1 MiB of a
    # process that has Redis disabled (the default) and would never use them.
    from roost.storage.redis import connect_redis

    # Among several processes Redis may be away at start: limits are then per process
    # until it answers (one process still refuses to start without the Redis it names).
    several = config.worker is not None
    redis = await connect_redis(
        reactor, config.redis.host, config.redis.port, config.redis.db, config.redis.password,
        connect_timeout=3.0 if several else 10.0, required=not several,
    )
    closers.append(("redis", redis.close))
    return RedisRateLimiter(redis, config.redis.key_prefix, clock)


def _limits(config: RoostConfig) -> dict[str, RateLimit]:
    limits = config.rate_limits
    return {
        name: RateLimit(getattr(limits, name).per_second, getattr(limits, name).burst)
        for name in ("login", "registration", "message", "media")
    }


async def _build_federation(config: RoostConfig, reactor: Any, clock: IReactorTime, db: Database,
                            local_key: LocalKey, closers: list[tuple[str, Any]],
                            metrics: Any) -> FederationParts:
    fed = config.federation
    server_keys = ServerKeyStore(db)
    client = build_federation_client(
        reactor, local_key, verify_certificates=fed.verify_certificates,
        ca_file=config.path(fed.ca_file) if fed.ca_file else None,
        ip_range_blocklist=fed.ip_range_blocklist,
        min_retry_interval_ms=fed.min_retry_interval, max_retry_interval_ms=fed.max_retry_interval,
        clock=clock)
    closers.append(("federation client", client.close))
    notaries = [Notary.from_base64(t.server_name, t.verify_keys) for t in fed.trusted_key_servers]
    keyring = KeyRing(clock, server_keys, local_key, FederationKeyFetcher(client), notaries)
    key_server = KeyServer(clock, local_key, server_keys, keyring)
    await key_server.start()  # records (and after a rotation, keeps publishing) our keys
    up: list[Any] = [client.reset_backoff]
    router = FederationRouter()
    register_version(router)
    key_resource.register(router, key_server)
    site = federation_site(FederationResource(router, keyring, config.server_name,
                                              on_authenticated=lambda o: [f(o) for f in up]))
    return FederationParts(site, router, client, keyring, key_server, up,
                           fetches=EventFetches(metrics))


def _metrics_registry(config: RoostConfig) -> Any:
    """One registry per homeserver, not prometheus_client's global one (tests run several
    homeservers in one process, each counting its own); none, and prometheus_client not
    imported, when the metrics listener is off."""
    if not config.listeners.metrics.enabled:
        return None
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


def _leave_all_rooms(engine: RoomEngine, state: RoomStateStore) -> Any:
    """A deactivated account leaves (and declines invites to) every room it was in."""

    async def leave_all(user_id: str) -> None:
        rooms = await state.rooms_for_user(user_id, ("join", "invite", "knock"))
        for room_id in rooms:
            try:
                await engine.append(room_id, NewEvent(user_id, "m.room.member",
                                                      {"membership": "leave"}, user_id))
            except RoomError as e:
                logger.warning("deactivated %s could not leave %s: %s", user_id, room_id, e)

    return leave_all


def _register_inbound_federation(federation: FederationParts, engine: RoomEngine,
                                 event_store: EventStore, db: Database, config: RoostConfig,
                                 local_key: LocalKey, clock: IReactorTime,
                                 directory_store: DirectoryStore, profile_store: ProfileStore,
                                 typing_tracker: Any, presence_tracker: PresenceTracker,
                                 receipt_service: Any, e2e_edus: Any = None) -> None:
    """/send (transactions and EDUs) and the served room, user and directory endpoints."""
    async def profile(user_id: str) -> dict[str, Any] | None:
        found = await profile_store.get_profile(user_id)
        return None if found is None else {"displayname": found.displayname,
                                           "avatar_url": found.avatar_url}

    def typing_edu(room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None:
        if typing:
            typing_tracker.set_typing(room_id, user_id, timeout_ms)
        else:
            typing_tracker.stop_typing(room_id, user_id)

    federation_served.register_all(
        federation.router, engine, event_store, federation.keyring, federation.client,
        FederationInboundStore(db), config.server_name, local_key.signing_key, clock,
        RoomAccess(engine, RoomStateStore(db), directory_store.is_forgotten,
                   ErasureStore(db, config.server_name).erased_among),
        directory_store, profile,
        EduSinks(typing_edu, receipt_service.put, presence_tracker.set_remote_presence,
                 e2e_edus),
        federation.fetches)


async def _sync_streams(db: Database, wiring: StreamWiring) -> dict[str, StreamIdGenerator]:
    return {
        "receipts": await wiring.stream("receipts", await ReceiptStore(db).max_stream_id()),
        "account_data": await wiring.stream("account_data",
                                            await AccountDataStore(db).max_stream_id()),
    }


def _register_sync(router: Router, db: Database, clock: IReactorTime, notifier: Notifier,
                   engine: RoomEngine, view: RoomView,
                   streams: dict[str, StreamIdGenerator],
                   closers: list[tuple[str, Any]], presence_tracker: PresenceTracker,
                   ) -> tuple[SyncBuilder, sync.ChangeWaiter, typing.TypingTracker]:
    """Typing, receipts, account data, filters and /sync itself (the socket reuses the last two)."""
    typing_tracker = typing.TypingTracker(clock, notifier)
    closers.append(("typing timers", typing_tracker.stop))
    receipt_service = receipts.Receipts(ReceiptStore(db), streams["receipts"], notifier, clock)
    account_store = AccountDataStore(db)
    account = account_data.AccountData(account_store, streams["account_data"], notifier)
    filters = FilterStore(db)

    async def room_exists(room_id: str) -> bool:
        return await engine.room_version(room_id) is not None

    typing.register(router, typing_tracker, view)
    receipts.register(router, receipt_service, view, account)
    account_data.register(router, account, filters, room_exists)
    user_rooms = UserRoomsCache(view.state)
    user_rooms.watching_since = streams["events"].current
    notifier.add_cache(user_rooms.on_change)  # before any reader is woken
    builder = SyncBuilder(engine, view, SyncEventStore(db), streams["events"], typing_tracker,
                          receipt_service, account_store, streams["account_data"],
                          presence_tracker, user_rooms, queries=SyncQueries(db),
                          remote_invite_state=FederationInboundStore(db).remote_invite_state,
                          notifier=notifier)
    waiter = sync.ChangeWaiter(notifier, clock, user_rooms, builder.prepare)
    sync.register(router, builder, waiter, filters, presence_tracker)
    return builder, waiter, typing_tracker


async def build_homeserver(
    config: RoostConfig, reactor: Any, clock: IReactorTime | None = None, dsn: str | None = None
) -> Homeserver:
    """Open storage and build every part; nothing listens yet."""
    clock = clock or reactor
    closers: list[tuple[str, Any]] = []
    db, embedded = await open_database(config, reactor, dsn)
    if embedded is not None:
        closers.append(("embedded PostgreSQL", embedded.cleanup))
    closers.append(("database pool", db.close))
    local_key = LocalKey(config.server_name, load_or_create_signing_key(config.signing_key_file))
    metrics = _metrics_registry(config)
    federation = await _build_federation(config, reactor, clock, db, local_key, closers, metrics)
    limiter = await _rate_limiter(config, reactor, clock, closers)

    users = UserStore(db)
    device_store = DeviceStore(db)
    accounts = Accounts(users, PasswordHasher(reactor, config.passwords.bcrypt_rounds), clock,
                        config.server_name)
    tokens = TokenAuthority(
        device_store,
        load_or_create_secret(config.token_secret_file),
        clock,
        config.tokens.access_token_lifetime,
        config.tokens.refresh_token_lifetime,
    )
    await tokens.load()

    async def password_ok(user_id: str, password: str) -> bool:
        return await accounts.check_password(user_id, password) is not None

    uia = UserInteractiveAuth(clock, password_ok, config.server_name)
    notifier = Notifier()
    event_store = EventStore(db)
    state_store = RoomStateStore(db)
    roles = Roles.from_config(config)
    stream_wiring = StreamWiring(config, roles, db, reactor)  # shared streams among processes
    await stream_wiring.open(closers)
    revocations = wire_session_revocations(config, db, stream_wiring.bus, stream_wiring.shared,
                                           reactor, closers)
    event_stream = await stream_wiring.stream("events", await event_store.max_stream_ordering())
    event_store.fence = getattr(event_stream, "fence", None)  # an event writer among several
    engine = build_engine(
        roles, reactor, closers, event_store, state_store, config.server_name,
        local_key.signing_key, clock, event_stream,
        stream_wiring.state_groups(await event_store.max_state_group()), notifier)
    watch_other_writers(roles, notifier, engine, stream_wiring.bus)
    directory_store = DirectoryStore(db)
    erasure = ErasureStore(db, config.server_name)
    view = RoomView(engine, state_store, RelationStore(db), clock,
                    access=RoomAccess(engine, state_store, directory_store.is_forgotten,
                                      erasure.erased_among))
    profile_store = ProfileStore(db)
    profiles = Profiles(profile_store, engine, state_store)
    presence_stream = StreamIdGenerator(0)  # presence lives in memory: restarts at 0
    presence_tracker = PresenceTracker(clock, notifier, presence_stream)
    closers.append(("presence timers", presence_tracker.stop))

    router = Router()
    versions.register(router, config.baseurl, health_checks(db, limiter))
    appservices = AppServices(load_registrations(
        [config.path(p) for p in config.app_service_config_files], config.server_name))
    register.register(router, accounts, tokens, uia, config.registration.enabled,
                      RegistrationTokenStore(db), clock,
                      require_token=config.registration.require_token,
                      allow_guests=config.registration.allow_guests, appservices=appservices)
    login_tokens = LoginTokens(LoginTokenStore(db), clock)
    login.register(router, accounts, tokens, device_store, appservices, login_tokens)
    login_tokens_api.register(router, login_tokens, uia)
    thirdparty.register(router, appservices)
    capabilities.register(router, config.rooms.default_version)
    on_deactivate = [profiles.on_deactivate, _leave_all_rooms(engine, state_store)]
    password_hooks: list[Any] = []
    account.register(router, accounts, tokens, device_store, uia, on_deactivate=on_deactivate,
                     on_password_change=password_hooks,
                     on_erase=[erase_hook(erasure, clock)])
    remote_queries = _build_remote_queries(federation, clock)
    profile.register(router, profiles, config.server_name, remote_queries)
    user_directory.register(router, profile_store)
    presence.register(router, presence_tracker, users, state_store.share_a_room)
    devices.register(router, device_store, tokens, uia)
    rooms.register(router, engine, view, directory_store,
                   RoomCreation(config.server_name, config.rooms.default_version),
                   profiles.member_profile,
                   RemoteRooms(federation.client, federation.keyring, engine, state_store,
                               config.server_name, local_key.signing_key, clock))
    send.register(router, engine, view, event_store, directory_store, config.server_name)
    room_state.register(router, engine, view)
    messages.register(router, engine, view, RoomPageStore(db), event_stream,
                      Backfiller(engine, event_store, federation.keyring, federation.client,
                                 config.server_name, federation.fetches).backfill)
    relations.register(router, engine, view, RelationStore(db))
    _register_versions(router, engine, view, directory_store, state_store, federation, config,
                       local_key, clock, db)
    directory.register(router, engine, view, directory_store, config.server_name, appservices,
                       _remote_alias(federation, engine, state_store, config, local_key, clock),
                       remote_queries)
    streams = {"events": event_stream, "presence": presence_stream, **await _sync_streams(db, stream_wiring)}
    builder, waiter, typing_tracker = _register_sync(router, db, clock, notifier, engine, view, streams, closers,
                                     presence_tracker)
    stream_wiring.share(typing_tracker, presence_tracker)
    push = await build_push(router, db, reactor, clock, config, notifier, engine, view, streams,
                             closers, password_hooks, builder, stream_wiring)

    register_client_extras(router, db, clock, notifier, engine, streams, config,
                           federation.router, view, closers, waiter,
                           directory_store, presence_tracker, federation.client)
    admin = register_admin(router, config, accounts, tokens, device_store, profiles, engine,
                            clock, db, on_deactivate)
    root = Resource()
    appservice_sender = await start_appservices(
        appservices, router, reactor, clock, db, users, engine, state_store, directory_store,
        event_stream, notifier, profiles, typing_tracker.typing_users,
        streams["receipts"].current, closers, runs_senders=roles.runs("appservice"))
    api = JsonResource(router, AppServiceAuth(appservices, tokens, users), limiter,
                       _limits(config))
    for name in (b"_matrix", b".well-known", b"health", b"_synapse"):
        root.putChild(name, api)
    _record_last_seen(api, device_store, clock, closers)
    sockets = Resource()
    socket_resource = websocket.websocket_resource(websocket.SocketServices(
        tokens, api, builder, waiter, clock, presence_tracker), reactor)
    closers.append(("websockets", socket_resource.close_all))
    sockets.putChild(b"ws", socket_resource)
    root.putChild(b"_roost", sockets)
    site = RoostSite(root, config.listeners.client.max_body_bytes,
                     config.listeners.client.x_forwarded)
    media = register_media(config, reactor, clock, db, router, federation, site, closers)
    admin_media.register(router, admin_media.AdminMedia(AdminGate(accounts), media))
    sender = FederationSender(
        sender_store(roles, db), state_store, event_stream, notifier, federation.client,
        config.server_name, clock, min_retry_interval_ms=config.federation.min_retry_interval,
        max_retry_interval_ms=config.federation.max_retry_interval,
        edus=EduSources(typing_tracker.typing_users, presence_tracker.get,
                        lambda: streams["receipts"].current),
        server_allowed=view.access.server_allowed,
        elsewhere=federation_wakeups(stream_wiring.bus), sends_to=destination_shard(roles),
        recent=engine.recent_local_events)
    if roles.runs("federation_sender"):
        await sender.start()
        closers.append(("federation sender", sender.stop))
        follow_federation_wakeups(stream_wiring.bus, sender)
    federation.on_authenticated.append(sender.destination_up)
    federation.sender = sender
    if metrics is not None:
        start_metrics(metrics, api, db, notifier, event_stream, socket_resource.open_sockets,
                       sender, appservice_sender, clock, closers)
    e2e_edus = await build_e2ee(router, db, config, clock, notifier, streams, device_store,
                                 uia, federation, sender, closers, builder, on_deactivate,
                                 stream_wiring)
    _register_inbound_federation(federation, engine, event_store, db, config, local_key, clock,
                                 directory_store, profile_store, typing_tracker, presence_tracker,
                                 receipts.Receipts(ReceiptStore(db), streams["receipts"],
                                                   notifier, clock), e2e_edus)
    await stream_wiring.start(closers)  # every stream exists: subscribe and catch up
    if revocations is not None:
        revocations.start()
    return Homeserver(config, reactor, clock, db, local_key, site, accounts, tokens, engine,
                      notifier, streams, closers, profiles, presence_tracker, federation, metrics,
                      sync_builder=builder, media=media, push=push, admin=admin,
                      internal_site=internal_site(roles, engine),
                      replication=stream_wiring.replication)


def _build_remote_queries(federation: Any, clock: Any) -> RemoteQueries | None:
    """Profiles and room directories of other servers (issue 15), when federating."""
    if federation is None:
        return None
    return RemoteQueries(federation.client, clock)


def _remote_alias(federation: Any, engine: RoomEngine, state_store: RoomStateStore,
                  config: Any, local_key: Any, clock: Any) -> Any:
    """Another server's alias resolved over federation (query/directory), when federating."""
    if federation is None:
        return None
    return RemoteRooms(federation.client, federation.keyring, engine, state_store,
                       config.server_name, local_key.signing_key, clock).resolve_alias


def _register_versions(router: Router, engine: RoomEngine, view: RoomView,
                       directory_store: DirectoryStore, state_store: RoomStateStore,
                       federation: Any, config: Any, local_key: Any, clock: Any,
                       db: Any) -> None:
    """Issue 15's endpoints: knocking, room upgrades, space hierarchies (client and
    federation)."""
    remote = RemoteRooms(federation.client, federation.keyring, engine, state_store,
                         config.server_name, local_key.signing_key, clock)
    knock.register(router, engine, view, directory_store, remote, FederationInboundStore(db))
    upgrade.register(router, engine, view, directory_store)
    spaces = SpaceHierarchy(engine, view.access)
    hierarchy.register(router, spaces, federation.client, config.server_name)
    room_summary.register(router, spaces, directory_store, state_store)
    federation_hierarchy.register(federation.router, spaces)


LAST_SEEN_FLUSH_S = 10.0


def _record_last_seen(api: JsonResource, devices: DeviceStore, clock: Any,
                      closers: list[tuple[str, Any]]) -> None:
    """Devices' last seen time and address: kept in memory per request, written every
    LAST_SEEN_FLUSH_S in one statement, and once more at a clean stop."""
    api.seen = lambda r, ip: devices.seen(r.user_id, r.device_id, int(clock.seconds() * 1000), ip)
    flush = task.LoopingCall(lambda: defer.ensureDeferred(devices.flush_seen()))
    flush.clock = clock
    flush.start(LAST_SEEN_FLUSH_S, now=False).addErrback(
        lambda f: logger.error("last seen flush: %s", f.getTraceback()))

    async def stop() -> None:
        flush.stop()
        await devices.flush_seen()

    closers.append(("devices' last seen", stop))
