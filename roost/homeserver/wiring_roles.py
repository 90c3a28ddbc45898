"""The wiring that differs by role (roles.py): the room engine a process gets, what it
does with other processes' writes, and which listeners it opens.

Split from wiring.py; with no `workers` section every function here gives what
the one process always had (a plain RoomEngine, every listener).
"""

from __future__ import annotations

from typing import Any

from roost.homeserver.config import RoostConfig
from roost.homeserver.roles import Roles
from roost.rooms.engine import RoomEngine
from roost.storage.federation_outbound import FederationOutboundStore
from roost.storage.notifier import Notifier, StreamChange


def build_engine(roles: Roles, reactor: Any, closers: list[tuple[str, Any]],
                 *args: Any) -> RoomEngine:
    """The room engine: a plain one for one process; else one that forwards the writes of
    rooms other processes write (room_writers.py)."""
    if roles.single_process:
        return RoomEngine(*args)
    from roost.homeserver.room_writers import ShardedEngine, WriterClient

    writers = WriterClient(reactor, roles)
    closers.append(("room writer connections", writers.pool.closeCachedConnections))
    return ShardedEngine(*args, roles=roles, writers=writers)


def watch_other_writers(roles: Roles, notifier: Notifier, engine: RoomEngine,
                        bus: Any) -> None:
    """Rooms another process appended to: drop their cached heads, before any reader is
    woken, so the next read loads the head that process made. Rooms whose history a
    writer backfilled (never on the events stream): told on the bus; after Redis was
    away, every head of another writer's room is dropped, as those messages were lost."""
    if roles.single_process:
        return

    def on_change(change: StreamChange) -> None:
        if change.stream == "events":
            engine.forget_heads(r for r in change.rooms if not roles.writes_room(r))

    notifier.add_cache(on_change)
    from roost.homeserver.room_writers import ShardedEngine

    if bus is None or not isinstance(engine, ShardedEngine):
        return
    engine.history_stored.append(lambda room: bus.publish("backfilled", {"r": room}))
    bus.subscribe("backfilled", lambda _instance, message: engine.forget_heads(
        [str(message["r"])] if not roles.writes_room(str(message["r"])) else []))
    bus.on_connect(engine.forget_others)


def internal_site(roles: Roles, engine: RoomEngine) -> Any:
    """The internal listener's site for an event writer among several processes, else None."""
    if roles.single_process or not roles.runs("event_writer"):
        return None
    from roost.homeserver.room_writers import ShardedEngine
    from roost.homeserver.room_writers import internal_site as site

    assert isinstance(engine, ShardedEngine)
    return site(engine, roles)


def listens_for_clients(config: RoostConfig) -> bool:
    """Client processes, and the media process (media endpoints live on the client
    listener), open the client listener."""
    return bool(config.roles & {"client", "media"})


def listens_for_servers(config: RoostConfig) -> bool:
    """Inbound federation processes, and the media process (federation media), open the
    federation listener when it is enabled."""
    return bool(config.roles & {"federation_inbound", "media"})


def federation_wakeups(bus: Any) -> Any:
    """What a federation sender this process does not run does with EDUs queued here and
    servers heard from here: tell the sending processes over the bus (None: one process)."""
    if bus is None:
        return None

    def tell(kind: str, destinations: list[str]) -> None:
        bus.publish("federation_wake", {"kind": kind, "destinations": destinations})

    return tell


def follow_federation_wakeups(bus: Any, sender: Any) -> None:
    """The sending process wakes for EDUs other processes queued and servers they heard."""
    if bus is not None:
        bus.subscribe("federation_wake", lambda _instance, body: sender.woken_elsewhere(
            str(body["kind"]), [str(d) for d in body["destinations"]]))
        bus.on_connect(sender.resume_queues)  # wake-ups published while Redis was away


def sender_store(roles: Roles, db: Any) -> FederationOutboundStore:
    """The federation sender's queue: with several senders each keeps its own position."""
    if len(roles.federation_senders) < 2:
        return FederationOutboundStore(db)
    return FederationOutboundStore(db, roles.instance, roles.federation_senders)


def destination_shard(roles: Roles) -> Any:
    """Which destinations this process's sender serves: None (all) unless several share."""
    if len(roles.federation_senders) < 2:
        return None
    return roles.sends_to
