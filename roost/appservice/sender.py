"""Pushing events to application services, durably and in order.

Like the federation sender, each service follows the events stream from its
own stored position: the events it is interested in become a numbered
transaction, written in the same database transaction that moves the position,
and the transaction is pushed (`PUT /_matrix/app/v1/transactions/{txnId}`)
until the service acknowledges it, retried with capped backoff. One
transaction is in flight per service, so the service sees events in stream
order; after a restart the unacknowledged one is sent again under its id.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import quote

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from roost.appservice.registration import AppService
from roost.storage.appservice import AppServiceStore
from roost.storage.notifier import Notifier, StreamChange
from roost.storage.streams import StreamIdGenerator

logger = logging.getLogger(__name__)
READ_BATCH = 100
JsonDict = dict[str, Any]


class Http(Protocol):
    """The outbound HTTP the sender and queries need (treq's shape: method, url, ...)."""

    async def request(self, method: str, url: str, token: str,
                      body: JsonDict | None = None) -> tuple[int, JsonDict]: ...


class StreamEvents(Protocol):
    async def events_after(self, after: int, upto: int, limit: int) -> list[Any]: ...


class Interest:
    """Whether a service wants an event: its sender or target is one of the service's
    users, its room is in the rooms namespace or has an alias in the aliases namespace,
    or one of the service's users is in the room."""

    def __init__(self, members_of: Callable[[str], Awaitable[Any]],
                 aliases_of: Callable[[str], Awaitable[list[str]]]) -> None:
        self._members_of = members_of
        self._aliases_of = aliases_of

    async def wants(self, service: AppService, event: Any, cache: dict[str, Any]) -> bool:
        if service.interested_in_user(event.sender):
            return True
        if event.type == "m.room.member" and event.state_key \
                and service.interested_in_user(event.state_key):
            return True
        return await self.wants_room(service, event.room_id, cache)

    async def wants_room(self, service: AppService, room_id: str, cache: dict[str, Any]) -> bool:
        """The room is in the rooms namespace, has an alias of the service, or one of its
        users is in it (`cache` keeps look-ups for one batch)."""
        if service.interested_in_room(room_id):
            return True
        if service.aliases:
            key = f"aliases:{room_id}"
            if key not in cache:
                cache[key] = await self._aliases_of(room_id)
            if any(service.interested_in_alias(a) for a in cache[key]):
                return True
        key = f"members:{room_id}"
        if key not in cache:
            cache[key] = list(await self._members_of(room_id))
        return any(service.interested_in_user(u) for u in cache[key])


class _Worker:
    def __init__(self, service: AppService) -> None:
        self.service = service
        self.position = 0
        self.wake: defer.Deferred[None] | None = None
        self.retry_ms = 0
        self.loop: defer.Deferred[None] | None = None


class AppServiceSender:
    def __init__(self, services: list[AppService], store: AppServiceStore,
                 events: StreamEvents, interest: Interest,
                 format_events: Callable[[list[str]], Awaitable[list[JsonDict]]],
                 stream: StreamIdGenerator, notifier: Notifier, http: Http,
                 clock: IReactorTime, *, min_retry_ms: int = 1000,
                 max_retry_ms: int = 300_000) -> None:
        self._workers = [_Worker(s) for s in services if s.url]
        self._store = store
        self._events = events
        self._interest = interest
        self._format = format_events
        self._stream = stream
        self._notifier = notifier
        self._http = http
        self._clock = clock
        self._min_retry = min_retry_ms
        self._max_retry = max_retry_ms
        self._stopped = False
        self._remove: Callable[[], None] | None = None
        self.sent_transactions = 0

    async def start(self) -> None:
        for worker in self._workers:
            worker.position = await self._store.position(worker.service.id, self._stream.current)
        self._remove = self._notifier.add_listener(self._on_change)
        for worker in self._workers:
            worker.loop = defer.ensureDeferred(self._run(worker))

    async def stop(self) -> None:
        self._stopped = True
        if self._remove is not None:
            self._remove()
        for worker in self._workers:
            if worker.loop is not None:
                worker.loop.cancel()
        await defer.DeferredList([w.loop for w in self._workers if w.loop is not None],
                                 consumeErrors=True)

    async def backlog(self) -> dict[str, int]:
        """Unacknowledged transactions per service (a metric)."""
        return {w.service.id: await self._store.backlog(w.service.id) for w in self._workers}

    def _on_change(self, change: StreamChange) -> None:
        if change.stream != "events":
            return
        for worker in self._workers:
            self._wake(worker)

    @staticmethod
    def _wake(worker: _Worker) -> None:
        waiting, worker.wake = worker.wake, None
        if waiting is not None and not waiting.called:
            waiting.callback(None)

    async def _run(self, worker: _Worker) -> None:
        while not self._stopped:
            try:
                if await self._send_pending(worker):
                    continue
                if not await self._queue_next(worker):
                    worker.wake = defer.Deferred()
                    await worker.wake
            except defer.CancelledError:
                return
            except Exception:
                logger.exception("application service %s: sending failed", worker.service.id)
                await self._back_off(worker)

    async def _send_pending(self, worker: _Worker) -> bool:
        """Push the oldest unacknowledged transaction; False when there is none."""
        pending = await self._store.oldest_txn(worker.service.id)
        if pending is None:
            return False
        txn_id, event_ids = pending
        body: JsonDict = {"events": await self._format(event_ids)}
        if worker.service.receive_ephemeral:
            body["ephemeral"] = []
        url = f"{worker.service.url}/_matrix/app/v1/transactions/{quote(str(txn_id))}"
        try:
            status, _answer = await self._http.request("PUT", url, worker.service.hs_token, body)
        except defer.CancelledError:
            raise
        except Exception as e:
            logger.info("application service %s unreachable: %s", worker.service.id, e)
            status = 0
        if status != 200:
            await self._back_off(worker)
            return True
        worker.retry_ms = 0
        await self._store.txn_done(worker.service.id, txn_id)
        self.sent_transactions += 1
        return True

    async def _queue_next(self, worker: _Worker) -> bool:
        """Turn the next stretch of the events stream into a transaction; False if none."""
        upto = self._stream.current
        if upto <= worker.position:
            return False
        events = await self._events.events_after(worker.position, upto, READ_BATCH)
        new_position = events[-1].stream_ordering if len(events) == READ_BATCH else upto
        cache: dict[str, Any] = {}
        wanted = [e.event_id for e in events
                  if await self._interest.wants(worker.service, e, cache)]
        await self._store.make_txn(worker.service.id, wanted, new_position)
        worker.position = new_position
        return True

    async def _back_off(self, worker: _Worker) -> None:
        worker.retry_ms = min(self._max_retry, max(self._min_retry, worker.retry_ms * 2))
        await task.deferLater(self._clock, worker.retry_ms / 1000, lambda: None)

