"""Typing and read receipts for application services registered with `receive_ephemeral`.

They are pushed as they happen, in transactions of their own holding only
`ephemeral` (the spec's `m.typing` and `m.receipt` EDUs with their `room_id`),
for the rooms each service is interested in. Unlike events they are not kept
across a restart nor retried for long: a typing notice or a receipt that
arrives minutes late is worth nothing, and the next one replaces it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from roost.appservice.registration import AppService
from roost.appservice.sender import Http, Interest
from roost.storage.notifier import Notifier, StreamChange

logger = logging.getLogger(__name__)
JsonDict = dict[str, Any]
ReceiptRow = tuple[str, str, str, str, str, int]  # room, user, type, thread, event, ts


class EphemeralRelay:
    def __init__(self, services: list[AppService], interest: Interest,
                 typing_users: Callable[[str], list[str]],
                 receipts_since: Callable[[int, int], Awaitable[list[ReceiptRow]]],
                 receipts_position: int, notifier: Notifier, http: Http,
                 clock: IReactorTime) -> None:
        self._services = [s for s in services if s.receive_ephemeral and s.url]
        self._interest = interest
        self._typing_users = typing_users
        self._receipts_since = receipts_since
        self._receipts_position = receipts_position
        self._http = http
        self._prefix = f"e{int(clock.seconds() * 1000)}"
        self._counter = 0
        self._pending: set[defer.Deferred[None]] = set()
        self._remove = notifier.add_listener(self._on_change) if self._services else None
        self.sent: list[tuple[str, list[JsonDict]]] = []  # (service id, edus): for tests

    async def stop(self) -> None:
        if self._remove is not None:
            self._remove()
        for pending in list(self._pending):
            pending.cancel()

    def _on_change(self, change: StreamChange) -> None:
        if change.stream == "typing":
            edus = [{"type": "m.typing", "room_id": room,
                     "content": {"user_ids": self._typing_users(room)}}
                    for room in sorted(change.rooms)]
            self._spawn(self._relay(edus))
        elif change.stream == "receipts" and change.position > self._receipts_position:
            after, self._receipts_position = self._receipts_position, change.position
            self._spawn(self._receipts(after, change.position))

    def _spawn(self, work: Any) -> None:
        d = defer.ensureDeferred(work)
        self._pending.add(d)
        d.addBoth(lambda r: (self._pending.discard(d), r)[1])
        d.addErrback(lambda f: None if f.check(defer.CancelledError) else logger.warning(
            "application service ephemeral push failed: %s", f.getErrorMessage()))

    async def _receipts(self, after: int, upto: int) -> None:
        by_room: dict[str, JsonDict] = {}
        for room, user, kind, thread, event_id, ts in await self._receipts_since(after, upto):
            receipt: JsonDict = {"ts": ts}
            if thread:
                receipt["thread_id"] = thread
            by_room.setdefault(room, {}).setdefault(event_id, {}).setdefault(kind, {})[
                user] = receipt
        await self._relay([{"type": "m.receipt", "room_id": room, "content": content}
                           for room, content in sorted(by_room.items())])

    async def _relay(self, edus: list[JsonDict]) -> None:
        cache: dict[str, Any] = {}
        for service in self._services:
            wanted = [e for e in edus
                      if await self._interest.wants_room(service, e["room_id"], cache)]
            if wanted:
                await self._push(service, wanted)

    async def _push(self, service: AppService, edus: list[JsonDict]) -> None:
        self._counter += 1
        txn_id = f"{self._prefix}-{self._counter}"
        status, _body = await self._http.request(
            "PUT", f"{service.url}/_matrix/app/v1/transactions/{txn_id}", service.hs_token,
            {"events": [], "ephemeral": edus})
        if status == 200:
            self.sent.append((service.id, edus))
