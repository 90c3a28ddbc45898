"""The federation sender: every local event to every other server in its room, and the
joins and leaves other servers made through this one (it relays them).

It pulls, like every reader of the streams. On each `events` notification it
reads the events after its persisted position (local sends this process has just
persisted come from the engine's memory: no read per message), works out each event's
destinations (the servers of the members joined in the state after it:
destinations.py), and in one transaction queues the event for each destination and
moves its position on. Each destination then gets its queue in order, in transactions
of at most 50 PDUs and 100 EDUs, one transaction in flight at a time; the
rows a transaction carried are deleted only after a 200 answer. So a restart
loses nothing, and a destination that was down gets everything, in order,
once it is back. Events with no destination (a room no other server is in)
queue nothing, and the position they move is written up to
`POSITION_WRITE_S` later, with the next write: not a transaction per batch.

A failed transaction is retried with the same transaction id after a delay
that starts at the configured minimum, doubles, and is capped at the
maximum; a destination is never given up on. The retry state is stored, so
it survives a restart, and it is cleared early when the destination sends us
an authenticated request (`destination_up`): it is evidently back.

EDUs: m.typing (diffed from the typing tracker on each `typing`
notification), m.receipt (public read receipts of local users, read from the
receipt store) and m.presence (of local users, to the servers sharing a room
with them). They are queued durably like PDUs, but typing notices older than
their usefulness are not kept across a restart (see `start`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from roost.federation.destinations import RoomDestinations, server_of
from roost.rooms.engine_types import RecentEvent, membership_of
from roost.storage.federation_outbound import (
    FederationOutboundStore,
    OutboundEvent,
    RetryState,
)
from roost.storage.notifier import Notifier, StreamChange
from roost.storage.room_state import RoomStateStore
from roost.storage.streams import StreamIdGenerator

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MAX_PDUS_PER_TXN = 50
MAX_EDUS_PER_TXN = 100
READ_BATCH = 500
POSITION_WRITE_S = 1.0  # at most this late when the events read had nothing to send


class Transport(Protocol):
    """What the sender needs of the federation client (a fake in unit tests)."""

    async def put_json(self, destination: str, path: str, body: Any, args: Any = None,
                       **options: Any) -> Any: ...


@dataclass
class EduSources:
    """Where ephemeral data comes from; wiring adapts the client API's trackers."""

    typing_users: Callable[[str], list[str]] | None = None  # room -> users typing now
    presence_of: Callable[[str], JsonDict] | None = None  # user -> m.presence content
    # The receipts stream's current position; receipts themselves are read from storage.
    receipts_position: Callable[[], int] | None = None


@dataclass
class _Destination:
    running: bool = False
    again: bool = False
    timer: IDelayedCall | None = None
    # The transaction being retried: (txn id, stream orderings, edu ids, body).
    in_flight: tuple[str, list[int], list[int], JsonDict] | None = None
    retry: RetryState | None = None


@dataclass
class SenderStats:
    transactions: int = 0
    failures: int = 0
    sent_pdus: list[str] = field(default_factory=list)


class FederationSender:
    def __init__(
        self,
        store: FederationOutboundStore,
        members: RoomStateStore,
        events_stream: StreamIdGenerator,
        notifier: Notifier,
        transport: Transport,
        server_name: str,
        clock: IReactorTime,
        *,
        min_retry_interval_ms: int,
        max_retry_interval_ms: int,
        edus: EduSources | None = None,
        server_allowed: Callable[[str, str], Awaitable[bool]] | None = None,
        elsewhere: Callable[[str, list[str]], None] | None = None,
        sends_to: Callable[[str], bool] | None = None,
        recent: Callable[[int, int], list[RecentEvent] | None] | None = None,
    ) -> None:
        """`server_allowed(room_id, server)` is the room's server ACL (RoomDestinations).

        A sender that is never started (another process sends: homeserver/roles.py) still
        queues the EDUs it is handed, in the database; it tells `elsewhere(kind,
        destinations)` ("queued" or "up") so that the sending process wakes for them.
        With several senders, `sends_to(destination)` says which destinations are this
        one's: it queues PDUs and the EDUs it derives (typing, receipts, presence) for
        those only, and passes others' wake-ups on. `recent(after, upto)` is the engine's
        `recent_local_events`."""
        self._elsewhere = elsewhere
        self._recent = recent
        self._mine = sends_to or (lambda destination: True)
        self._store = store
        self._members = members
        self._stream = events_stream
        self._notifier = notifier
        self._transport = transport
        self._server_name = server_name
        self._clock = clock
        self._min_retry = max(1, min_retry_interval_ms)
        self._max_retry = max(self._min_retry, max_retry_interval_ms)
        self._edus = edus or EduSources()
        self._position = 0
        self._position_due = False  # the position moved without a write: write it next
        self._position_timer: IDelayedCall | None = None
        self._reading = False
        self._read_again = False
        self._destinations: dict[str, _Destination] = {}
        self._routes = RoomDestinations(store, members, server_name, server_allowed)
        self._typing_sent: dict[str, set[str]] = {}  # room -> local users we said are typing
        self._typing_queue = defer.DeferredLock()
        self._receipts_position = 0
        self._txn_prefix = ""
        self._txn_counter = 0
        self._remove_listener: Callable[[], None] | None = None
        self._stopped = False
        self._started = False
        self._tasks: set[defer.Deferred[None]] = set()
        self._bookkeeping: set[defer.Deferred[None]] = set()
        self.stats = SenderStats()

    # -- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Load the position (first start: now, history is not sent) and resume queues."""
        self._started = True
        self._txn_prefix = str(self._now_ms())
        position = await self._store.get_position()
        if position is None:
            position = self._stream.current
            await self._store.set_position(position)
        self._position = position
        if self._edus.receipts_position is not None:
            self._receipts_position = self._edus.receipts_position()
        self._remove_listener = self._notifier.add_listener(self._on_change)
        await self._resume_queues()
        self._read_events()

    async def _resume_queues(self) -> None:
        for destination, next_attempt in (await self._store.destinations_pending()).items():
            if destination == self._server_name or not self._mine(destination):
                continue
            self._wake(destination, max(0, next_attempt - self._now_ms()))

    def resume_queues(self) -> None:
        """Look at every destination owed something again (after other processes' wake-ups
        may have been lost: the bus was down)."""
        if self._started and not self._stopped:
            self._spawn(self._resume_queues())

    async def stop(self) -> None:
        """Stop listening and cancel timers; what is queued stays queued for the next start."""
        self._stopped = True
        if self._remove_listener is not None:
            self._remove_listener()
        for state in self._destinations.values():
            if state.timer is not None and state.timer.active():
                state.timer.cancel()
        if self._position_timer is not None and self._position_timer.active():
            self._position_timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        if self._bookkeeping:
            await defer.DeferredList(list(self._bookkeeping), consumeErrors=True)

    def destination_up(self, destination: str) -> None:
        """The destination just reached us: retry it now rather than at its backoff's end."""
        if not self._started or not self._mine(destination):
            if self._elsewhere is not None:
                self._elsewhere("up", [destination])
            return
        state = self._destinations.get(destination)
        if state is None or state.retry is None:
            return
        state.retry = None
        self._spawn(self._store.clear_retry(destination))
        self._wake(destination, 0)

    # -- reading the events stream ---------------------------------------------------

    def _on_change(self, change: StreamChange) -> None:
        if self._stopped:
            return
        if change.stream == "events":
            self._read_events()
        elif change.stream == "typing" and self._edus.typing_users is not None:
            for room_id in change.rooms:
                self._spawn(self._typing_changed(room_id))
        elif change.stream == "receipts" and self._edus.receipts_position is not None:
            self._spawn(self._receipts_changed(change.position))
        elif change.stream == "presence" and self._edus.presence_of is not None:
            local = [u for u in change.users if server_of(u) == self._server_name]
            if local:
                self._spawn(self._presence_changed(local))

    def _read_events(self) -> None:
        if self._reading:
            self._read_again = True
            return
        if self._pass_with_nothing_to_send():
            return
        self._reading = True
        self._spawn(self._read_loop())

    def _pass_with_nothing_to_send(self) -> bool:
        """Pass the new events at once if they are local sends the engine holds, each in a
        state group whose hosts are known and hold no other server; else False (the read
        loop's task takes them, as it would anyway).

        What the read loop would do for such events, without its task, coroutines and
        `OutboundEvent`s (a message in a room no other server is in, under fan-out):
        with no destination (`RoomDestinations.none_for_local_sends`, the same rule as
        the loop's), it queues nothing and moves the position to be written later
        (`_write_position_soon`)."""
        upto = self._stream.current
        if upto <= self._position or self._position_due or self._recent is None:
            return False
        found = self._recent(self._position, upto)
        if found is None or len(found) >= READ_BATCH:
            return False
        if not self._routes.none_for_local_sends(found):
            return False
        self._write_position_soon()
        self._position = upto
        return True

    async def _read_loop(self) -> None:
        try:
            while not self._stopped:
                self._read_again = False
                upto = self._stream.current
                if upto <= self._position:
                    if self._position_due:
                        self._position_due = False
                        await self._store.set_position(self._position)
                    if not self._read_again:
                        return
                    continue
                events = self._local_events(self._position, upto)
                if events is None:
                    events = await self._store.events_after(self._position, upto, READ_BATCH)
                new_position = events[-1].stream_ordering if len(events) == READ_BATCH else upto
                rows: list[tuple[str, int, str]] = []
                for event in events:
                    for destination in sorted(await self._routes.of_event(event)):
                        if self._mine(destination):
                            rows.append((destination, event.stream_ordering, event.event_id))
                relayed = [e.event_id for e in events if e.relay_origin is not None]
                if rows or relayed or self._position_due:
                    self._position_due = False
                    await self._store.enqueue_pdus(rows, new_position, relayed)
                else:
                    self._write_position_soon()
                self._position = new_position
                for destination in {r[0] for r in rows}:
                    self._wake(destination, None)
        except defer.CancelledError:
            raise
        except Exception:
            logger.exception("federation sender: reading events failed; retrying on next event")
        finally:
            self._reading = False

    def _local_events(self, after: int, upto: int) -> list[OutboundEvent] | None:
        """The events of (after, upto] if all are local sends the engine still holds (never
        rejected, never relayed: they are what storage would answer), else None."""
        found = self._recent(after, upto) if self._recent is not None else None
        if found is None:
            return None
        return [OutboundEvent(position, e.event_id, e.room_id, e.sender, e.type, e.state_key,
                              membership_of(e), group) for position, e, group in found]

    def _write_position_soon(self) -> None:
        """Events with nothing to send (a room no other server is in) move the position
        without a write of their own: it is written with the next batch that queues
        something, or by the read loop `POSITION_WRITE_S` later. Read again after a crash,
        those events would find nothing to send again."""
        if self._position_timer is None or not self._position_timer.active():
            self._position_timer = self._clock.callLater(POSITION_WRITE_S, self._position_now)

    def _position_now(self) -> None:
        self._position_due = True
        self._read_events()

    # -- EDUs ----------------------------------------------------------------------

    async def queue_edus(self, rows: list[tuple[str, str, Any]]) -> None:
        """Queue (destination, edu_type, content) rows from other parts (the end-to-end
        EDUs: device list updates, to-device messages); each leaves in a later transaction."""
        await self._queue_edus([r for r in rows if r[0] != self._server_name])

    async def _queue_edus(self, rows: list[tuple[str, str, Any]]) -> None:
        await self._store.enqueue_edus(rows, self._now_ms())
        destinations = sorted({r[0] for r in rows})
        others = [d for d in destinations if not self._started or not self._mine(d)]
        if self._elsewhere is not None and others:
            self._elsewhere("queued", others)
        for destination in destinations:
            if self._started and self._mine(destination):
                self._wake(destination, None)

    async def _queue_own_edus(self, rows: list[tuple[str, str, Any]]) -> None:
        """EDUs this sender derives itself (every sender derives them): its own share."""
        await self._queue_edus([r for r in rows if self._mine(r[0])])

    def woken_elsewhere(self, kind: str, destinations: list[str]) -> None:
        """Another process queued EDUs for these destinations ("queued") or heard from
        them ("up"): send now."""
        if not self._started:
            return
        for destination in [d for d in destinations if self._mine(d)]:
            if kind == "up":
                self.destination_up(destination)
            else:
                self._wake(destination, None)

    async def _typing_changed(self, room_id: str) -> None:
        assert self._edus.typing_users is not None
        now = {u for u in self._edus.typing_users(room_id) if server_of(u) == self._server_name}
        before = self._typing_sent.get(room_id, set())
        changes = [(u, True) for u in sorted(now - before)] + [(u, False) for u in sorted(before - now)]
        if now:
            self._typing_sent[room_id] = now
        else:
            self._typing_sent.pop(room_id, None)
        if not changes:
            return
        # Queued in the order the changes happened: two changes close together each
        # read the room's hosts and insert from a database thread, and the later
        # ("stopped typing") could otherwise land first and be overtaken by the earlier.
        await self._typing_queue.acquire()
        try:
            hosts = await self._routes.room_hosts(room_id)
            await self._queue_own_edus([
                (host, "m.typing", {"room_id": room_id, "user_id": user, "typing": typing})
                for host in sorted(hosts) for user, typing in changes
            ])
        finally:
            self._typing_queue.release()

    async def _receipts_changed(self, upto: int) -> None:
        # Receipts commit in order of their positions (the stream only moves up to
        # what has finished), so (last seen, notified] holds every new one.
        after = self._receipts_position
        if upto <= after:
            return
        self._receipts_position = upto
        await self._queue_receipts(await self._store.receipts_since(after, upto))

    async def _queue_receipts(self, rows: list[tuple[str, str, str, str, str, int]]) -> None:
        by_room: dict[str, JsonDict] = {}
        for room, user, rtype, thread, event_id, ts in rows:
            if rtype != "m.read" or server_of(user) != self._server_name:
                continue
            data: JsonDict = {"ts": ts}
            if thread:
                data["thread_id"] = thread
            by_room.setdefault(room, {})[user] = {"event_ids": [event_id], "data": data}
        queued: list[tuple[str, str, Any]] = []
        for room, users in by_room.items():
            for host in sorted(await self._routes.room_hosts(room)):
                queued.append((host, "m.receipt", {room: {"m.read": users}}))
        if queued:
            await self._queue_own_edus(queued)

    async def _presence_changed(self, users: list[str]) -> None:
        assert self._edus.presence_of is not None
        per_host: dict[str, list[JsonDict]] = {}
        for user in users:
            hosts: set[str] = set()
            for room in await self._members.rooms_for_user(user, ("join",)):
                hosts |= await self._routes.room_hosts(room)
            if not hosts:
                continue
            content = {"user_id": user, **self._edus.presence_of(user)}
            for host in hosts:
                per_host.setdefault(host, []).append(content)
        await self._queue_own_edus([(host, "m.presence", {"push": push})
                                for host, push in sorted(per_host.items())])

    # -- sending to one destination --------------------------------------------------

    def _wake(self, destination: str, delay_ms: int | None) -> None:
        """Send to `destination` now (None: unless it is backing off), or after `delay_ms`."""
        if self._stopped or destination == self._server_name:
            return
        state = self._destinations.setdefault(destination, _Destination())
        if delay_ms is None and state.timer is not None and state.timer.active():
            return  # backing off: the timer will send everything queued meanwhile
        if delay_ms:
            if state.timer is not None and state.timer.active():
                state.timer.cancel()
            state.timer = self._clock.callLater(delay_ms / 1000, self._wake, destination, 0)
            return
        if state.timer is not None and state.timer.active():
            state.timer.cancel()
        state.timer = None
        if state.running:
            state.again = True
            return
        state.running = True
        self._spawn(self._send_loop(destination, state))

    async def _send_loop(self, destination: str, state: _Destination) -> None:
        try:
            while not self._stopped:
                state.again = False
                if state.in_flight is None:
                    pdus, edus, gone = await self._store.pending(
                        destination, MAX_PDUS_PER_TXN, MAX_EDUS_PER_TXN)
                    if not pdus and not edus:
                        if gone:
                            await self._shielded(self._store.delivered(destination, gone, []))
                            continue
                        if state.again:
                            continue
                        return
                    body = {
                        "origin": self._server_name,
                        "origin_server_ts": self._now_ms(),
                        "pdus": [json.loads(p.pdu_json) for p in pdus],
                    }
                    if edus:
                        body["edus"] = [{"edu_type": e.edu_type, "content": e.content}
                                        for e in edus]
                    state.in_flight = (self._next_txn_id(),
                                       [p.stream_ordering for p in pdus] + gone,
                                       [e.id for e in edus], body)
                txn_id, orderings, edu_ids, body = state.in_flight
                if not await self._send_transaction(destination, state, txn_id, body):
                    return  # a retry is scheduled
                await self._shielded(self._store.delivered(destination, orderings, edu_ids))
                state.in_flight = None
                state.retry = None
                self.stats.sent_pdus.extend(p["event_id"] for p in body["pdus"]
                                            if isinstance(p.get("event_id"), str))
        except defer.CancelledError:
            raise
        except Exception:
            logger.exception("federation sender: queue for %s failed", destination)
            await self._failed(destination, state)
        finally:
            state.running = False

    async def _send_transaction(self, destination: str, state: _Destination, txn_id: str,
                                body: JsonDict) -> bool:
        path = f"/_matrix/federation/v1/send/{quote(txn_id, safe='')}"
        try:
            answer = await self._transport.put_json(destination, path, body, ignore_backoff=True)
        except defer.CancelledError:
            raise
        except Exception as e:
            logger.info("federation sender: transaction %s to %s failed: %s", txn_id,
                        destination, e)
            await self._failed(destination, state)
            return False
        self.stats.transactions += 1
        results = answer.get("pdus") if isinstance(answer, dict) else None
        if isinstance(results, dict):
            for event_id, result in results.items():
                if isinstance(result, dict) and result.get("error"):
                    logger.info("%s refused %s: %s", destination, event_id, result["error"])
        return True

    async def _failed(self, destination: str, state: _Destination) -> None:
        self.stats.failures += 1
        previous = state.retry or await self._store.get_retry(destination)
        interval = self._min_retry if previous is None else min(previous.retry_interval_ms * 2,
                                                                 self._max_retry)
        count = 1 if previous is None else previous.failure_count + 1
        state.retry = RetryState(count, interval, self._now_ms() + interval)
        try:
            await self._store.set_retry(destination, state.retry)
        except defer.CancelledError:
            raise  # stopping: the database went first
        except Exception:
            logger.exception("federation sender: could not store retry state of %s", destination)
        if not self._stopped:
            if state.timer is not None and state.timer.active():
                state.timer.cancel()
            state.timer = self._clock.callLater(interval / 1000, self._wake, destination, 0)

    # -- helpers -------------------------------------------------------------------------

    def _next_txn_id(self) -> str:
        self._txn_counter += 1
        return f"{self._txn_prefix}.{self._txn_counter}"

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def _shielded(self, write: Any) -> None:
        """Run a queue write that a stop must not cut short: once a destination has taken a
        transaction, forgetting it has to commit, or the next start sends it again. `stop`
        cancels the waiting task but waits for the write itself."""
        done: defer.Deferred[None] = defer.ensureDeferred(write)
        self._bookkeeping.add(done)
        done.addBoth(lambda result: (self._bookkeeping.discard(done), result)[1])
        waiter: defer.Deferred[None] = defer.Deferred()
        done.chainDeferred(waiter)  # cancelling the waiter leaves `done` running
        await waiter

    def _spawn(self, coro: Any) -> None:
        d = defer.ensureDeferred(coro)
        self._tasks.add(d)

        def done(result: Any) -> None:
            self._tasks.discard(d)
            if isinstance(result, Failure) and not result.check(defer.CancelledError):
                logger.error("federation sender task failed: %s", result.getTraceback())

        d.addBoth(done)

    def pending_work(self) -> bool:
        """Whether anything is being read or sent right now (tests wait on this)."""
        return self._reading or any(s.running for s in self._destinations.values())
