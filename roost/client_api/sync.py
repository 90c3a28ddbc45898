"""GET /sync: the builder's delta, with long polling on the notifier.

A sync with nothing new waits until a change that concerns the user (an
event in one of their rooms, their typing, receipts, account data, presence
of someone they share a room with) or until `timeout` passes on the injected
clock. A client that goes away cancels the wait.
"""

from __future__ import annotations

import json
from typing import Any

from roost.client_api.errors import MatrixError, invalid_param
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.stream_token import StreamToken
from roost.client_api.sync_builder import SyncBuilder
from roost.client_api.sync_filter import DEFAULT_FILTER, SyncFilter
from roost.client_api.sync_poll import MAX_TIMEOUT_MS, FastPolls
from roost.client_api.sync_waiter import ChangeWaiter
from roost.http.bodies import RawJson
from roost.storage.sync_data import FilterStore

MAX_REMEMBERED_FILTERS = 10_000
MAX_REMEMBERED_QUERIES = 4096
PollArgs = tuple[str | None, str | None, bool, int, str]


def register(router: Router, builder: SyncBuilder, waiter: ChangeWaiter, filters: FilterStore,
             presence: Any | None = None) -> None:
    # (user, filter id) -> the parsed stored filter. A stored filter never changes
    # (the spec has no way to), and clients pass its id on every sync: read once.
    stored_filters: dict[tuple[str, int], SyncFilter] = {}

    async def load_filter(user_id: str, raw: str | None) -> SyncFilter:
        if raw is None:
            return DEFAULT_FILTER
        if raw.startswith(("{", "[")):
            try:
                body = json.loads(raw)
            except ValueError:
                raise MatrixError(400, "M_NOT_JSON", "filter is not JSON") from None
            return SyncFilter.from_json(body)  # validated: 400 M_BAD_JSON if not a filter
        key = (user_id, int(raw)) if raw.isdigit() and len(raw) <= 18 else None
        found = stored_filters.get(key) if key is not None else None
        if found is not None:
            return found
        stored = await filters.get(*key) if key is not None else None
        if stored is None:
            raise MatrixError(404, "M_NOT_FOUND", "Filter not found")
        found = SyncFilter.from_json(stored)
        if len(stored_filters) >= MAX_REMEMBERED_FILTERS:
            stored_filters.clear()
        stored_filters[key] = found
        return found

    def known_filter(user_id: str, raw: str | None) -> SyncFilter | None:
        """`load_filter`'s answer when known without a coroutine (the default filter, or a
        stored one parsed before: most polls), else None."""
        if raw is None:
            return DEFAULT_FILTER
        if raw.isdigit() and len(raw) <= 18:
            return stored_filters.get((user_id, int(raw)))
        return None

    # query string -> its checked arguments: the receivers one message wakes come back
    # with the same query (the same `since`), so it is read once.
    queries: dict[bytes, PollArgs] = {}

    def poll_args(req: ApiRequest) -> PollArgs:
        """(since, filter, full_state, timeout in ms, set_presence), checked."""
        uri = getattr(req.http, "uri", None)
        known = queries.get(uri) if uri is not None else None
        if known is not None:
            return known
        since_raw = req.arg("since")
        if since_raw:
            StreamToken.parse(since_raw)  # 400 M_INVALID_PARAM first, if malformed
        filter_raw = req.arg("filter")
        full_state = req.bool_arg("full_state")
        timeout_ms = req.int_arg("timeout", 0) or 0
        if timeout_ms < 0:
            raise invalid_param("timeout must not be negative")
        set_presence = req.arg("set_presence", "online")
        if set_presence not in ("online", "offline", "unavailable"):
            raise invalid_param("set_presence must be online, offline or unavailable")
        parsed = (since_raw or None, filter_raw, full_state, timeout_ms, set_presence)
        if uri is not None and b"access_token" not in uri:  # no token kept in memory
            if len(queries) >= MAX_REMEMBERED_QUERIES:
                queries.clear()
            queries[uri] = parsed
        return parsed

    async def sync(req: ApiRequest) -> JsonDict | RawJson:
        user = req.user.user_id
        since_raw, filter_raw, full_state, timeout_ms, set_presence = poll_args(req)
        since: StreamToken | None = None
        if since_raw:  # most polls come back with the current token: taken as it is
            now = builder.now()
            since = now if since_raw == builder.text(now) else StreamToken.parse(since_raw)
        filt = known_filter(user, filter_raw) or await load_filter(user, filter_raw)
        if presence is not None and set_presence == "online":
            presence.polled(user)
        elif presence is not None:
            if set_presence == "unavailable":
                status = presence.get(user).get("status_msg")
                await presence.set_presence(user, "unavailable", status)
            presence.connection_opened(user)
        try:
            return await _long_poll(builder, waiter, user, req.user.device_id, since, filt,
                                    full_state, min(timeout_ms, MAX_TIMEOUT_MS) / 1000)
        finally:
            if presence is not None:
                presence.connection_closed(user)

    # The usual long poll (current `since`, known query and filter) without `sync`'s
    # coroutines: it waits and is answered the same way (sync_poll.py).
    fast = FastPolls(builder, waiter, presence, queries.get, poll_args, known_filter, _long_poll)
    router.add("GET", f"{CLIENT_PREFIX}/sync", sync, fast=fast)


async def _long_poll(builder: SyncBuilder, waiter: ChangeWaiter, user: str,
                     device_id: str | None, since: StreamToken | None, filt: SyncFilter,
                     full_state: bool, timeout_s: float, deadline: float | None = None,
                     at_once: bool = True) -> JsonDict | RawJson:
    """Answer at once if anything is new, else wait for a change or the timeout.

    A poll whose `since` is every stream's current position waits without
    building anything (nothing can be new; a body built then would be thrown
    away, and with the other areas' sections it costs queries): under fan-out
    that halves the work per delivery.

    `deadline` (instead of `timeout_s` from now) and `at_once` (False: `build_at_once`
    was just asked and declined) continue a poll that sync_poll.py began.
    """
    if deadline is None:
        deadline = waiter.clock.seconds() + timeout_s
    while True:
        now = builder.now()
        # (the events positions first: after a wake-up they differ, and no __eq__ is called)
        if since is not None and not full_state and (now is since or (
                now.events == since.events and now == since)):
            remaining = deadline - waiter.clock.seconds()
            if remaining > 0 and await waiter.wait(user, remaining):
                continue  # something for this user landed: build from `since`
            body, _ = await builder.build(user, since, filt, device_id=device_id)
            return body  # the timeout: an empty delta, with the sections' current values
        if since is not None and not full_state and at_once:
            # A woken receiver: its answer from memory (encoded), if all is there.
            answered = builder.build_at_once(user, since, filt, device_id)
            if answered is not None:
                return answered[0]
        at_once = True
        body, token = await builder.build(user, since, filt, full_state, device_id)
        if since is None or full_state or not builder.is_empty(body):
            return body
        remaining = deadline - waiter.clock.seconds()
        if remaining <= 0:
            return body  # an empty delta, with a token at the current positions
        if builder.now() != token:
            continue  # something landed while building: look again before waiting
        if not await waiter.wait(user, remaining):
            body, _ = await builder.build(user, since, filt, device_id=device_id)
            return body
