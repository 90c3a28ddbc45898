"""GET /sync: the builder's delta, with long polling on the notifier.

A sync with nothing new waits until a change that concerns the user (an
event in one of their rooms, their typing, receipts, account data, presence
of someone they share a room with) or until `timeout` passes on the injected
clock. A client that goes away cancels the wait.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer

from roost.client_api.errors import MatrixError, invalid_param
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.sync_builder import SyncBuilder, SyncFilter, SyncToken
from roost.storage.notifier import Notifier, StreamChange
from roost.storage.room_state import UserRoomsCache
from roost.storage.sync_data import FilterStore

MAX_TIMEOUT_MS = 300_000


class ChangeWaiter:
    """Waits for the first notifier change that concerns a user, or a timeout."""

    def __init__(self, notifier: Notifier, clock: Any, user_rooms: UserRoomsCache) -> None:
        self._notifier = notifier
        self.clock = clock
        self._user_rooms = user_rooms

    async def wait(self, user_id: str, timeout_s: float) -> bool:
        """True if something changed for the user, False on timeout.

        The listener is registered before the user's rooms are read, and
        changes seen meanwhile are checked once the rooms are known, so a
        change landing during that read is not missed.
        """
        done: defer.Deferred[bool] = defer.Deferred()
        early: list[StreamChange] = []
        rooms: set[str] | None = None

        def concerns(change: StreamChange) -> bool:
            assert rooms is not None
            return user_id in change.users or bool(rooms & change.rooms) or (
                change.stream == "presence" and bool(change.users))

        def on_change(change: StreamChange) -> None:
            if done.called:
                return
            if rooms is None:
                early.append(change)
            elif concerns(change):
                done.callback(True)

        remove = self._notifier.add_listener(on_change)
        timer = None
        try:
            rooms = {r for r, m in (await self._user_rooms.rooms(user_id)).items()
                     if m in ("join", "invite")}
            if any(concerns(c) for c in early):
                return True
            timer = self.clock.callLater(timeout_s, lambda: done.called or done.callback(False))
            return await done
        finally:
            remove()
            if timer is not None and timer.active():
                timer.cancel()


def register(router: Router, builder: SyncBuilder, waiter: ChangeWaiter, filters: FilterStore,
             presence: Any | None = None) -> None:
    async def load_filter(user_id: str, raw: str | None) -> SyncFilter:
        if raw is None:
            return SyncFilter()
        if raw.startswith("{"):
            try:
                body = json.loads(raw)
            except ValueError:
                raise MatrixError(400, "M_NOT_JSON", "filter is not JSON") from None
            from roost.client_api.account_data import check_filter

            check_filter(body)
            return SyncFilter.from_json(body)
        stored = await filters.get(user_id, int(raw)) if raw.isdigit() else None
        if stored is None:
            raise MatrixError(404, "M_NOT_FOUND", "Filter not found")
        return SyncFilter.from_json(stored)

    async def sync(req: ApiRequest) -> JsonDict:
        user = req.user.user_id
        since_raw = req.arg("since")
        since = SyncToken.parse(since_raw) if since_raw else None
        filt = await load_filter(user, req.arg("filter"))
        full_state = req.bool_arg("full_state")
        timeout_ms = req.int_arg("timeout", 0) or 0
        if timeout_ms < 0:
            raise invalid_param("timeout must not be negative")
        set_presence = req.arg("set_presence", "online")
        if set_presence not in ("online", "offline", "unavailable"):
            raise invalid_param("set_presence must be online, offline or unavailable")
        if presence is not None and set_presence == "online":
            presence.user_active(user)
        elif presence is not None and set_presence == "unavailable":
            status = presence.get(user).get("status_msg")
            await presence.set_presence(user, "unavailable", status)
        if presence is not None:
            presence.connection_opened(user)
        try:
            return await _long_poll(builder, waiter, user, since, filt, full_state,
                                    min(timeout_ms, MAX_TIMEOUT_MS) / 1000)
        finally:
            if presence is not None:
                presence.connection_closed(user)

    router.add("GET", f"{CLIENT_PREFIX}/sync", sync)


async def _long_poll(builder: SyncBuilder, waiter: ChangeWaiter, user: str,
                     since: SyncToken | None, filt: SyncFilter, full_state: bool,
                     timeout_s: float) -> JsonDict:
    deadline = waiter.clock.seconds() + timeout_s
    while True:
        body, token = await builder.build(user, since, filt, full_state)
        if since is None or full_state or not builder.is_empty(body):
            return body
        remaining = deadline - waiter.clock.seconds()
        if remaining <= 0:
            return body  # an empty delta, with a token at the current positions
        if builder.now() != token:
            continue  # something landed while building: look again before waiting
        if not await waiter.wait(user, remaining):
            body, _ = await builder.build(user, since, filt)
            return body
