"""Wiring for what operators run beside the homeserver's core: the admin API,
application services (bridges), the metrics and the health check.

Split from wiring.py, which builds the core and calls these; like wiring, this
module knows every package and passes each part exactly what it uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime

from roost.admin import rooms as admin_rooms
from roost.admin import server as admin_server
from roost.admin import users as admin_users
from roost.admin.auth import AdminGate
from roost.admin.register import SharedSecretRegistration
from roost.admin.registration_tokens import AdminRegistrationTokens
from roost.admin.reports import AdminReports
from roost.appservice.client import AppServiceHttp
from roost.appservice.ephemeral import EphemeralRelay
from roost.appservice.sender import AppServiceSender, Interest
from roost.client_api import appservice as client_appservice
from roost.client_api.accounts import Accounts
from roost.client_api.appservice import AppServices
from roost.client_api.event_format import client_event
from roost.client_api.profile import Profiles
from roost.client_api.resource import JsonResource, RateLimiter, Router
from roost.client_api.rooms import RoomCreation
from roost.client_api.tokens import TokenAuthority
from roost.federation.sender import FederationSender
from roost.homeserver.config import RoostConfig
from roost.rooms.engine import RoomEngine
from roost.storage.accounts import UserExistsError, UserStore
from roost.storage.admin_queries import AdminQueries
from roost.storage.appservice import AppServiceStore
from roost.storage.database import Database
from roost.storage.devices import DeviceStore
from roost.storage.directory import DirectoryStore
from roost.storage.erasure import ErasureStore
from roost.storage.federation_outbound import FederationOutboundStore
from roost.storage.notifier import Notifier
from roost.storage.registration_tokens import RegistrationTokenStore
from roost.storage.reports import ReportStore
from roost.storage.room_purge import RoomPurger
from roost.storage.room_state import RoomStateStore
from roost.storage.streams import StreamIdGenerator


@dataclass
class AdminParts:
    users: admin_users.AdminUsers
    rooms: admin_rooms.AdminRooms


def health_checks(db: Database, limiter: RateLimiter) -> dict[str, Any]:
    """What /health asks: a query on the database, a PING to Redis when Redis is on."""
    async def database() -> object:
        return await db.run("health", lambda txn: txn.query_one("SELECT 1"))

    checks: dict[str, Any] = {"database": database}
    redis = getattr(limiter, "redis", None)
    if redis is not None:
        checks["redis"] = lambda: redis.execute("PING")
    return checks


def erase_hook(erasure: ErasureStore, clock: IReactorTime) -> Any:
    """Deactivation with erase: true records the user as erased (issue 15)."""
    async def erase(user_id: str) -> None:
        await erasure.erase(user_id, int(clock.seconds() * 1000))
    return erase


def register_admin(router: Router, config: RoostConfig, accounts: Accounts,
                    tokens: TokenAuthority, device_store: DeviceStore, profiles: Profiles,
                    engine: RoomEngine, clock: IReactorTime, db: Database,
                    on_deactivate: list[Any]) -> AdminParts:
    """The /_synapse/admin API (shared-secret registration, users, rooms) on the client
    listener, as operators' tools expect it there."""
    gate = AdminGate(accounts)
    queries = AdminQueries(db, config.server_name)
    parts = AdminParts(
        admin_users.AdminUsers(gate, accounts, queries, device_store, tokens, profiles,
                               on_deactivate,
                               erase_hook(ErasureStore(db, config.server_name), clock)),
        admin_rooms.AdminRooms(gate, queries, engine,
                               RoomCreation(config.server_name, config.rooms.default_version),
                               clock, RoomPurger(db)))
    admin_server.register_all(
        router,
        SharedSecretRegistration(config.registration.shared_secret, accounts, tokens, profiles,
                                 clock),
        parts.users, parts.rooms,
        AdminRegistrationTokens(gate, RegistrationTokenStore(db), clock),
        AdminReports(gate, ReportStore(db), queries, engine))
    return parts


async def start_appservices(appservices: AppServices, router: Router, reactor: Any,
                             clock: IReactorTime, db: Database, users: UserStore,
                             engine: RoomEngine, state_store: RoomStateStore,
                             directory_store: DirectoryStore, event_stream: StreamIdGenerator,
                             notifier: Notifier, profiles: Profiles,
                             typing_users: Any, receipts_position: int,
                             closers: list[tuple[str, Any]],
                             runs_senders: bool = True) -> AppServiceSender | None:
    """Each service's bot account, its client endpoints, and (in the one process with the
    appservice role) the transaction sender and the ephemeral relay."""
    now_ms = int(clock.seconds() * 1000)
    for service in appservices.services:
        try:
            await users.create_user(service.sender, None, False, now_ms)
        except UserExistsError:
            pass
    http = AppServiceHttp(reactor)
    appservices.http = http
    # Registered before the sender and the relay, so closed after them (closers run last
    # first): a transaction still in flight when they stop goes back to the pool only then.
    closers.append(("application service connections", http.pool.closeCachedConnections))
    profiles.ask_for_missing = appservices.query_user
    client_appservice.register(router, appservices, http)
    if not appservices.services or not runs_senders:
        return None

    async def members_of(room_id: str) -> list[str]:
        members = await state_store.members(room_id)
        return [u for u, (m, _e) in members.items() if m in ("join", "invite")]

    async def format_events(event_ids: list[str]) -> list[Any]:
        loaded = await engine.get_events(event_ids)
        now = int(clock.seconds() * 1000)
        return [client_event(loaded[i], now) for i in event_ids if i in loaded]

    interest = Interest(members_of, directory_store.aliases_of)
    sender = AppServiceSender(
        appservices.services, AppServiceStore(db), FederationOutboundStore(db), interest,
        format_events, event_stream, notifier, http, clock)
    await sender.start()
    closers.append(("application service sender", sender.stop))
    relay = EphemeralRelay(appservices.services, interest, typing_users,
                           FederationOutboundStore(db).receipts_since, receipts_position,
                           notifier, http, clock)
    closers.append(("application service ephemeral relay", relay.stop))
    return sender


def start_metrics(registry: Any, api: JsonResource, db: Database, notifier: Notifier,
                   event_stream: StreamIdGenerator, open_sockets: Any,
                   sender: FederationSender, appservice_sender: AppServiceSender | None,
                   clock: IReactorTime, closers: list[tuple[str, Any]]) -> None:
    """Requests, database, events, sockets, federation and bridge queues on /metrics."""
    from roost.homeserver import server_metrics as m  # prometheus_client: only if on

    api.observer = m.RequestMetrics(registry)
    m.DatabaseMetrics(registry, db)
    m.StreamMetrics(registry, notifier, event_stream.current)
    m.ReadOnScrape(registry, lambda: len(open_sockets), sender.stats)
    queues = m.QueueMetrics(registry, clock, FederationOutboundStore(db).queue_depths,
                            appservice_sender.backlog if appservice_sender else None)
    queues.start()
    closers.append(("metrics refresh", queues.stop))
