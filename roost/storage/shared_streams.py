"""Streams that several processes write and read (issue 17's scale-out).

`SharedStream` keeps StreamIdGenerator's interface (allocate, finish,
current, on_advance, announce_to) and its promise, now across processes: a
reader's `current` is a position at and below which every write of every
writer has committed, so incremental /sync and the WebSocket never skip a
write that commits late in another process, nor repeat one.

Each writer claims a position: every write of its own at or below the claim
has committed, and its later writes will be above it. A reader's `current`
is the smallest claim of all writers. A writer with nothing in flight may
claim the newest position it knows of, because it then allocates only above
it; without that, one idle writer would hold every reader back.

Positions are allocated in memory, with no database round trip: writer i of
N takes the positions congruent to i modulo N, above everything it has seen
(the table's maximum at start, the stored claims, and every claim it hears
of since). They are unique across processes as long as every process has
the same list of writers (it comes from the configuration; change it only
with every process stopped), and a writer that heard of a newer claim jumps
above it. With one writer this is today's in-memory counter.

`Replication` is the glue to the outside: claims travel on the replication
bus (storage/replication.py) and are stored (storage/stream_positions.py),
at most every `store_interval` seconds, so a process that starts, or that
lost Redis, catches up from the database; while Redis is unreachable it
polls the stored claims every second instead.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet import defer, task

from roost.storage.database import Database, application_name
from roost.storage.replication import ReplicationBus
from roost.storage.stream_positions import Fence, StreamPositionStore, WriterFenced
from roost.storage.streams import Announcer

logger = logging.getLogger(__name__)

ClaimHook = Callable[[int, frozenset[str], frozenset[str]], None]
_NOTHING: frozenset[str] = frozenset()


class SharedStream:
    """One stream's positions as seen by one process, which may also write it."""

    def __init__(self, name: str, instance: str, writers: Sequence[str], start: int,
                 claims: dict[str, int] | None = None,
                 notifier: Announcer | None = None) -> None:
        if not writers or len(set(writers)) != len(writers):
            raise ValueError(f"stream {name}: writers must be distinct and at least one")
        self.name = name
        self.instance = instance
        self._notifier = notifier
        self._writers = tuple(writers)
        self.is_writer = instance in self._writers
        self.fenced = False  # retired by the others while alive: writes no more (Replication)
        # What this writer's writing transactions check (stream_positions.Fence), if stored.
        self.fence: Fence | None = None
        self._step = len(self._writers)
        self._offset = self._writers.index(instance) if self.is_writer else 0
        # Other writers' claims, as far as this process knows them. A writer with no
        # stored claim yet is held at the lowest claim known (or `start` if none is):
        # it stores its first claim, at or above every claim stored before, before
        # its first write (StreamPositionStore.register), so nothing of it lies below.
        known = {w: p for w, p in (claims or {}).items() if w in self._writers and w != instance}
        self._floor = min(known.values()) if known else start
        self._claims = {w: known.get(w, self._floor) for w in self._writers if w != instance}
        self._mine = start  # this writer's own claim (unused when only following)
        self._next = self._above(start)
        self._last = start  # the newest own position allocated (or the start)
        self._pending: list[int] = []  # heap of own allocated, unfinished positions
        self._finished: set[int] = set()
        self._outbox: dict[int, tuple[frozenset[str], frozenset[str]]] = {}
        # What writes concern, by position, held until `current` covers them.
        self._held: dict[int, tuple[frozenset[str], frozenset[str]]] = {}
        self._current = self._lowest_claim()
        self._listeners: list[Callable[[int], None]] = []
        self._claim_hooks: list[ClaimHook] = []

    # -- StreamIdGenerator's interface ------------------------------------------

    def announce_to(self, notifier: Announcer, name: str) -> None:
        """Announce this stream's readable changes on `notifier` as `name`."""
        self._notifier, self.name = notifier, name

    def allocate(self, count: int = 1) -> list[int]:
        """Reserve `count` positions of this writer's own; each must later be `finish`ed."""
        if not self.is_writer:
            raise RuntimeError(f"{self.instance} is not a writer of the {self.name} stream")
        if self.fenced:
            raise WriterFenced(f"{self.instance} was retired from the {self.name} stream:"
                               " restart this process")
        ids = [self._next + i * self._step for i in range(count)]
        self._next += count * self._step
        self._last = ids[-1] if ids else self._last
        for i in ids:
            heapq.heappush(self._pending, i)
        return ids

    def finish(self, ids: list[int], rooms: Iterable[str] = (),
               users: Iterable[str] = ()) -> None:
        """Mark own positions written (committed, or abandoned with no rooms or users)."""
        rooms, users = frozenset(rooms), frozenset(users)
        if ids and (rooms or users):
            last = max(ids)
            self._hold(last, rooms, users)
            out_rooms, out_users = self._outbox.get(last, (_NOTHING, _NOTHING))
            self._outbox[last] = (out_rooms | rooms, out_users | users)
        self._finished.update(ids)
        while self._pending and self._pending[0] in self._finished:
            self._finished.discard(heapq.heappop(self._pending))
        self._reclaim()
        self._advance()

    @property
    def current(self) -> int:
        """The largest position at and below which every writer's writes have committed."""
        return self._current

    def on_advance(self, listener: Callable[[int], None]) -> None:
        self._listeners.append(listener)

    # -- across processes ----------------------------------------------------------

    @property
    def claim(self) -> int:
        """This writer's own claim (what it publishes and stores)."""
        return self._mine

    def claims(self) -> dict[str, int]:
        """Every writer's claim as known here, this process's own included."""
        known = dict(self._claims)
        if self.is_writer:
            known[self.instance] = self._mine
        return known

    def on_claim(self, hook: ClaimHook) -> None:
        """Call `hook(claim, rooms, users)` when this writer's claim moves (to publish it)."""
        self._claim_hooks.append(hook)

    def observe(self, instance: str, claim: int, rooms: Iterable[str] = (),
                users: Iterable[str] = ()) -> None:
        """Another writer's claim, heard on the bus or read from storage."""
        self.observe_many({instance: claim}, rooms, users)

    def observe_many(self, claims: dict[str, int], rooms: Iterable[str] = (),
                     users: Iterable[str] = (), at: int | None = None) -> None:
        """Several writers' claims at once; `rooms`/`users` are what their writes concern,
        announced once `current` reaches `at` (by default the highest claim given)."""
        moved = False
        for instance, claim in claims.items():
            if instance == self.instance or instance not in self._writers:
                continue
            if claim > self._claims[instance]:
                self._claims[instance] = claim
                moved = True
        rooms, users = frozenset(rooms), frozenset(users)
        if (rooms or users) and (claims or at is not None):
            self._hold(max(claims.values()) if at is None else at, rooms, users)
        if moved:
            self._reclaim()
        self._advance()

    def would_reach(self, claims: dict[str, int]) -> int:
        """The `current` these claims would give (to ask storage what lies between)."""
        merged = dict(self._claims)
        for instance, claim in claims.items():
            if instance != self.instance and instance in self._writers:
                merged[instance] = max(claim, merged.get(instance, claim))
        return max(self._current, self._lowest_claim(merged))

    # -- internals -----------------------------------------------------------------

    def _above(self, position: int) -> int:
        """The first position of this writer's own above `position`."""
        first = position + 1
        return first + (self._offset - first) % self._step

    def _lowest_claim(self, claims: dict[str, int] | None = None) -> int:
        known = list((self._claims if claims is None else claims).values())
        if self.is_writer:
            known.append(self._mine)
        return min(known)

    def _reclaim(self) -> None:
        """Move this writer's claim as far as its own unfinished writes allow."""
        if not self.is_writer:
            return
        if self._pending:
            claim = self._pending[0] - 1
        else:  # nothing in flight: the newest position known, allocating only above it
            claim = max([self._last, *self._claims.values()])
            self._next = max(self._next, self._above(claim))
        if claim <= self._mine:
            return
        self._mine = claim
        rooms: frozenset[str] = _NOTHING
        users: frozenset[str] = _NOTHING
        for position in [p for p in self._outbox if p <= claim]:
            out_rooms, out_users = self._outbox.pop(position)
            rooms, users = rooms | out_rooms, users | out_users
        for hook in list(self._claim_hooks):
            hook(claim, rooms, users)

    def _hold(self, position: int, rooms: frozenset[str], users: frozenset[str]) -> None:
        held = self._held.get(position)
        if held is not None:
            rooms, users = rooms | held[0], users | held[1]
        self._held[position] = (rooms, users)

    def _advance(self) -> None:
        """Announce `current` if it moved, with what every write now readable concerns."""
        new = self._lowest_claim()
        if new <= self._current:
            return
        self._current = new
        rooms: set[str] = set()
        users: set[str] = set()
        for position in [p for p in self._held if p <= new]:
            held_rooms, held_users = self._held.pop(position)
            rooms |= held_rooms
            users |= held_users
        for listener in list(self._listeners):
            listener(new)
        if self._notifier is not None:
            self._notifier.notify(self.name, new, rooms, users)


class StateGroupIds:
    """State group ids for several event writers: writer i of N takes i (mod N)."""

    def __init__(self, current_max: int, index: int = 0, count: int = 1) -> None:
        first = current_max + 1
        self._next = first + (index - first) % count
        self._step = count

    def next(self) -> int:
        value = self._next
        self._next += self._step
        return value


class Replication:
    """One per process: its shared streams, kept in step over the bus and in storage."""

    def __init__(self, bus: ReplicationBus | None, db: Database, clock: Any,
                 store_interval: float = 0.2, poll_interval: float = 1.0,
                 heartbeat_every: int = 5, instance: str | None = None,
                 retire_after: float = 5.0,
                 on_retired: Callable[[str], None] | None = None) -> None:
        """Without a bus (no Redis), positions are only polled from storage."""
        self.bus = bus
        self.instance = bus.instance if bus is not None else str(instance)
        self._store = StreamPositionStore(db)
        self._clock = clock
        self._store_interval = store_interval
        self._poll_interval = poll_interval
        self._heartbeat_every = heartbeat_every
        self._ticks = 0
        self._streams: dict[str, SharedStream] = {}
        self._storing: dict[str, Any] = {}  # stream -> its pending store call or Deferred
        # stream -> (claim, rooms, users) to publish at the end of this reactor turn
        self._outgoing: dict[str, tuple[int, set[str], set[str]]] = {}
        self._loop: task.LoopingCall | None = None
        self._catching_up: defer.Deferred[None] | None = None
        self._stopped = False
        # A writer whose claim holds readers back and has not moved for `retire_after`
        # seconds is looked for in pg_stat_activity; gone, it is retired.
        self._retire_after = retire_after
        self._unmoved: dict[tuple[str, str], tuple[int, float]] = {}
        # (stream, writer) looked for on every tick: never seen, or said it stopped.
        self._suspects: set[tuple[str, str]] = set()
        self._retiring: defer.Deferred[None] | None = None
        self._on_retired = on_retired
        self._was_connected = False
        if bus is not None:
            bus.subscribe("position", self._on_position)
            bus.subscribe("ask", lambda sender, message: self._publish_claims())
            bus.on_connect(self._on_connect)
            bus.subscribe("retired", self._on_retired_message)
            bus.subscribe("offline", self._on_offline)

    async def stream(self, name: str, table_max: int, writers: Sequence[str]) -> SharedStream:
        """The shared stream `name`; its writers' order must be the same in every process."""
        epoch = None
        if self.instance in writers:  # recorded before any write (see SharedStream)
            start, stored, epoch = await self._store.register(name, self.instance, table_max)
        else:
            stored = await self._store.load(name)
            start = table_max
        shared = SharedStream(name, self.instance, writers, start, stored)
        if epoch is not None:  # its writes commit only while the others have not passed it
            shared.fence = Fence(name, self.instance, epoch, lambda: self._retired(shared))
        # Writers never seen (no claim stored): looked for at once, not after
        # `retire_after`: one that is not running must not hold readers back.
        self._suspects |= {(name, w) for w in writers if w != self.instance and w not in stored}
        if shared.is_writer:
            shared.on_claim(lambda claim, rooms, users: self._claimed(shared, claim, rooms, users))
        self._streams[name] = shared
        return shared

    def state_group_ids(self, table_max: int, writers: Sequence[str]) -> StateGroupIds:
        """State group ids unique across the event writers `writers`."""
        index = list(writers).index(self.instance) if self.instance in writers else 0
        return StateGroupIds(table_max, index, len(writers))

    def start(self) -> None:
        """Poll stored positions while Redis is away; repeat claims now and then."""
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop.start(self._poll_interval, now=False).addErrback(
            lambda f: logger.error("replication loop stopped: %s", f.value))

    async def stop(self) -> None:
        """Stop polling and store every claim as it stands (flushed for the next start)."""
        self._stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for pending in list(self._storing.values()):
            if isinstance(pending, defer.Deferred):
                await pending  # a store under way finishes first
            elif pending.active():
                pending.cancel()
        self._storing.clear()
        mine = [shared.name for shared in self._streams.values() if shared.is_writer]
        for shared in self._streams.values():
            if shared.is_writer:
                await self._store.store(shared.name, self.instance, shared.claim)
        if self.bus is not None and mine:  # the others pass it once its connections are gone
            self.bus.publish("offline", {"s": mine})

    async def catch_up(self) -> None:
        """Read every writer's stored claim and announce what it makes readable."""
        for shared in list(self._streams.values()):
            stored = await self._store.load(shared.name)
            if shared.is_writer and stored.get(self.instance, shared.claim) > shared.claim:
                self._retired(shared)
            target = shared.would_reach(stored)
            rooms: set[str] = set()
            users: set[str] = set()
            if target > shared.current:
                found = await self._store.changes_between(shared.name, shared.current, target)
                if found is not None:
                    rooms, users = found
            shared.observe_many(stored, rooms, users, at=target)

    async def retire_stalled(self) -> None:
        """Let readers pass writers that hold them back and whose process is gone.

        A writer killed with writes in flight never finishes them, and its last
        claim would hold every reader of the stream until it came back. Once no
        connection of its process is left, none of those writes can commit any
        more, so it is treated as idle: its claim moves to the newest known
        (stored, so that it starts above it when it returns), and the writes
        it did commit are announced with their rooms and users.
        """
        for shared, instance, top in self._stalled():
            if not await self._store.retire_if_gone(shared.name, instance,
                                                    application_name(instance), top):
                continue
            self._suspects.discard((shared.name, instance))
            logger.warning("%s: writer %s is gone; readers pass its claim", shared.name,
                           instance)
            if self.bus is not None:  # in case it is alive after all, cut off from PostgreSQL
                self.bus.publish("retired", {"s": shared.name, "w": instance, "p": top})
            target = shared.would_reach({instance: top})
            found = await self._store.changes_between(shared.name, shared.current, target)
            rooms, users = found if found is not None else (set(), set())
            shared.observe_many({instance: top}, rooms, users, at=target)

    # -- internals ---------------------------------------------------------------

    def _on_offline(self, sender: str, message: dict[str, Any]) -> None:
        self._suspects |= {(name, sender) for name in message.get("s", ())
                           if name in self._streams}

    def _on_retired_message(self, sender: str, message: dict[str, Any]) -> None:
        shared = self._streams.get(message.get("s", ""))
        if shared is not None and shared.is_writer and message.get("w") == self.instance:
            self._retired(shared)

    def _retired(self, shared: SharedStream) -> None:
        """The others took this process for dead (it had no database connection for a
        while) and passed its claim: a write it still made below their position would
        never be read. It writes the stream no more; `on_retired` (wiring: stop the
        process, to be restarted above everyone) decides the rest."""
        if shared.fenced:
            return
        shared.fenced = True
        logger.critical("%s: this process (%s) was retired by the others; it must restart",
                        shared.name, self.instance)
        if self._on_retired is not None:
            self._on_retired(shared.name)

    def _stalled(self) -> list[tuple[SharedStream, str, int]]:
        """(stream, writer, newest claim) for each other writer holding readers back
        for `retire_after` seconds without moving."""
        now = self._clock.seconds()
        found = []
        for shared in self._streams.values():
            claims = shared.claims()
            top = max(claims.values())
            for instance, claim in claims.items():
                if instance == self.instance:
                    continue
                key = (shared.name, instance)
                seen = self._unmoved.get(key)
                if key in self._suspects and claim < top and claim <= shared.current:
                    found.append((shared, instance, top))
                elif seen is None or seen[0] != claim or claim >= top:
                    self._unmoved[key] = (claim, now)
                elif claim <= shared.current and now - seen[1] >= self._retire_after:
                    found.append((shared, instance, top))
        return found

    def _claimed(self, shared: SharedStream, claim: int, rooms: frozenset[str],
                 users: frozenset[str]) -> None:
        if self.bus is not None:
            # One message per stream per reactor turn: writes finishing together (a
            # busy writer) share it, with the union of their rooms and users.
            held = self._outgoing.get(shared.name)
            if held is None:
                self._outgoing[shared.name] = (claim, set(rooms), set(users))
                self._clock.callLater(0, self._publish_claim, shared.name)
            else:
                held[1].update(rooms)
                held[2].update(users)
                self._outgoing[shared.name] = (claim, held[1], held[2])
        if shared.name not in self._storing and not self._stopped:
            self._storing[shared.name] = self._clock.callLater(
                self._store_interval, self._store_claim, shared)

    def _store_claim(self, shared: SharedStream) -> None:
        claim = shared.claim
        d = defer.ensureDeferred(self._store.store(shared.name, self.instance, claim))
        self._storing[shared.name] = d

        def stored(_: Any) -> None:
            self._storing.pop(shared.name, None)
            if shared.claim > claim and not self._stopped:  # moved meanwhile: store again, no sooner than the interval
                self._storing[shared.name] = self._clock.callLater(
                    self._store_interval, self._store_claim, shared)

        d.addErrback(lambda f: logger.warning("storing %s position failed: %s",
                                              shared.name, f.value))
        d.addBoth(stored)

    def _publish_claim(self, name: str) -> None:
        claim, rooms, users = self._outgoing.pop(name)
        message: dict[str, Any] = {"s": name, "p": claim}
        if rooms:
            message["r"] = sorted(rooms)
        if users:
            message["u"] = sorted(users)
        if self.bus is not None:
            self.bus.publish("position", message)

    def _publish_claims(self) -> None:
        if self.bus is None:
            return
        for shared in self._streams.values():
            if shared.is_writer:
                self.bus.publish("position", {"s": shared.name, "p": shared.claim})

    def _on_position(self, sender: str, message: dict[str, Any]) -> None:
        shared = self._streams.get(message.get("s", ""))
        if shared is None:
            return
        self._suspects.discard((shared.name, sender))  # it is running
        shared.observe(sender, int(message["p"]), message.get("r", ()), message.get("u", ()))

    def _on_connect(self) -> None:
        """After a (re)connection: ask writers to repeat, and read what was stored meanwhile."""
        if self.bus is not None:
            self.bus.publish("ask", {})
        self._publish_claims()
        self._start_catch_up()

    def _tick(self) -> None:
        """Every second; a failure is logged, never allowed to stop the loop for good."""
        try:
            self._tick_once()
        except Exception:
            logger.exception("replication tick failed")

    def _tick_once(self) -> None:
        self._ticks += 1
        connected = self.bus is not None and self.bus.connected
        if connected and not self._was_connected:  # e.g. the publisher came back last
            self._on_connect()
        self._was_connected = connected
        if self._retiring is None and self._stalled():
            d = defer.ensureDeferred(self.retire_stalled())
            self._retiring = d
            d.addErrback(lambda f: logger.warning("retiring a writer failed: %s", f.value))
            d.addBoth(lambda _: setattr(self, "_retiring", None))
        if self.bus is None or not self.bus.connected:
            self._start_catch_up()
        elif self._ticks % self._heartbeat_every == 0:
            self._publish_claims()

    def _start_catch_up(self) -> None:
        if self._catching_up is not None:
            return
        d = defer.ensureDeferred(self.catch_up())
        self._catching_up = d
        d.addErrback(lambda f: logger.warning("replication catch-up failed: %s", f.value))
        d.addBoth(lambda _: setattr(self, "_catching_up", None))
