"""GET /messages, GET /event/{eventId}, GET /context/{eventId}.

Pagination tokens are positions in the events stream, `s<N>`: events at or
below N lie before the token, events above it after. Paginating backwards from
`sN` returns events at or below N, newest first; forwards, those above N.

History from before this server joined a room is backfilled from other servers
when a backwards page comes up short (``backfill``, from federation): those
events take positions below zero, allocated downwards as they arrive, so they
sort before everything held and `s<N>` tokens work unchanged (N may be
negative: `s-12`). Positions stay totally ordered within a room, a token
stays valid after more history arrives (it only adds below), and the readers
of the live stream (/sync, the socket, the federation sender) read above
positions they hold, so they never see history arrive.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from roost.client_api.errors import MatrixError, invalid_param, not_found
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.room_view import RoomView
from roost.client_api.stream_token import events_position
from roost.rooms.access import EVENTS
from roost.rooms.engine import LoadedEvent, RoomEngine
from roost.storage.events import StoredEvent
from roost.storage.room_pages import RoomPageStore
from roost.storage.streams import StreamIdGenerator

MAX_LIMIT = 1000
# Before every position, backfilled history included (forward pagination with no `from`).
FIRST_POSITION = -(1 << 62)
# Rounds of backfill one backwards page may wait for.
MAX_BACKFILL_ROUNDS = 5

# (room id, how many events) -> whether any history was added.
Backfill = Callable[[str, int], Awaitable[bool]]


def parse_token(token: str | None, name: str) -> int | None:
    """The events position of a token: `s<N>` from here, or any token /sync gave."""
    return events_position(token, name)


def parse_filter(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise MatrixError(400, "M_NOT_JSON", "filter is not JSON") from None
    if not isinstance(value, dict):
        raise MatrixError(400, "M_BAD_JSON", "filter must be an object")
    return value


def _type_list(value: object, name: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError(400, "M_BAD_JSON", f"filter {name} must be a list of strings")
    return value


def register(
    router: Router, engine: RoomEngine, view: RoomView, events: RoomPageStore,
    stream: StreamIdGenerator, backfill: Backfill | None = None,
) -> None:
    async def require_readable(room_id: str, user_id: str) -> None:
        await view.require_read(room_id, user_id, EVENTS)

    async def messages(req: ApiRequest) -> JsonDict:
        room_id, user = req.params["room_id"], req.user.user_id
        direction = req.arg("dir")
        if direction not in ("b", "f"):
            raise invalid_param("dir must be b or f") if direction else MatrixError(
                400, "M_MISSING_PARAM", "missing parameter: dir")
        backwards = direction == "b"
        start = parse_token(req.arg("from"), "from")
        to = parse_token(req.arg("to"), "to")
        filt = parse_filter(req.arg("filter"))
        limit = req.int_arg("limit", None) or filt.get("limit") or 10
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise invalid_param("limit must be a positive integer")
        limit = min(limit, MAX_LIMIT)
        await require_readable(room_id, user)
        if start is None:
            start = stream.current if backwards else FIRST_POSITION
        from_pos = start + 1 if backwards else start
        # Events at or below N lie before `sN`: backwards, the page stops above it.
        stop = to + 1 if backwards and to is not None else to
        types = _type_list(filt.get("types"), "types")
        not_types = _type_list(filt.get("not_types"), "not_types")
        page, stopped_at, reader = await _stream_page(events, room_id, from_pos, stop, backwards,
                                                      limit, types, not_types, user)
        rounds = 0
        # A short backwards page may have reached the start of what this server holds of
        # a room joined over federation: fetch history from the servers in the room.
        while backwards and backfill is not None and len(page) < limit and to is None \
                and rounds < MAX_BACKFILL_ROUNDS and await backfill(room_id, max(limit, 20)):
            rounds += 1
            page, stopped_at, reader = await _stream_page(
                events, room_id, from_pos, stop, backwards, limit, types, not_types, user)
        loaded = engine.loaded(page)
        visible = await view.visible(room_id, user, loaded, reader)
        # The page's read named what relates to each event: no aggregation query for none.
        kinds = {s.event_id: s.relation_kinds for s in page if s.relation_kinds is not None}
        body: JsonDict = {"chunk": await view.serialize_json(visible, user, relation_kinds=kinds),
                          "start": f"s{start}"}
        if stopped_at is not None:  # a wildcard filter's scan stopped short: go on from there
            body["end"] = f"s{stopped_at - 1}" if backwards else f"s{stopped_at}"
        elif len(page) == limit and page:
            last = page[-1].stream_ordering or 0
            body["end"] = f"s{last - 1}" if backwards else f"s{last}"
        if filt.get("lazy_load_members") is True:
            body["state"] = await _members_of_senders(engine, view, room_id, user, visible)
        return body

    async def get_event(req: ApiRequest) -> JsonDict:
        room_id, user = req.params["room_id"], req.user.user_id
        event_id = req.params["event_id"]
        await view.require_read(room_id, user, EVENTS, refuse_as_missing=True)
        loaded = (await engine.get_events([event_id])).get(event_id)
        if loaded is None or loaded.event.room_id != room_id or loaded.rejected:
            raise not_found("Event not found")
        shown = await view.visible(room_id, user, [loaded])  # as this user may see it
        if not shown:
            raise not_found("Event not found")
        return (await view.serialize(shown, user))[0]

    async def context(req: ApiRequest) -> JsonDict:
        room_id, user = req.params["room_id"], req.user.user_id
        event_id = req.params["event_id"]
        limit = req.limit_arg("limit", 10, MAX_LIMIT)
        await require_readable(room_id, user)
        loaded = (await engine.get_events([event_id])).get(event_id)
        if loaded is None or loaded.event.room_id != room_id or loaded.stream_ordering is None:
            raise not_found("Event not found")
        shown = await view.visible(room_id, user, [loaded])  # as this user may see it
        if not shown:
            raise not_found("Event not found")
        position = loaded.stream_ordering
        before_n, after_n = limit // 2, limit - limit // 2
        before = engine.loaded(await events.room_stream_events(room_id, position, None, True, before_n))
        after = engine.loaded(await events.room_stream_events(room_id, position, None, False, after_n))
        before = await view.visible(room_id, user, before)
        after = await view.visible(room_id, user, after)
        state_ids = await _state_at(view, loaded)
        state_events = list((await engine.get_events(state_ids)).values())
        return {
            "event": (await view.serialize(shown, user))[0],
            "events_before": await view.serialize(before, user),
            "events_after": await view.serialize(after, user),
            # Tokens lie between events: `start` just before the earliest event returned
            # (the context event itself when none before it is), `end` just after the last.
            "start": f"s{(before[-1].stream_ordering or 1) - 1 if before else position - 1}",
            "end": f"s{after[-1].stream_ordering if after else position}",
            "state": await view.serialize(state_events, user, with_relations=False),
        }

    R = f"{CLIENT_PREFIX}/rooms/{{room_id}}"
    router.add("GET", f"{R}/messages", messages)
    router.add("GET", f"{R}/event/{{event_id}}", get_event)
    router.add("GET", f"{R}/context/{{event_id}}", context)


# How many events a wildcard type filter reads per round trip, and at most per request.
_SCAN_BATCH = 200
MAX_SCANNED = 10 * _SCAN_BATCH


def _type_pattern(patterns: list[str]) -> re.Pattern[str]:
    """A filter's type list as one regex; `*` matches any run of characters (spec: filters)."""
    return re.compile("|".join(re.escape(p).replace(r"\*", ".*") for p in patterns))


def _type_of(event: StoredEvent) -> str:
    return str(json.loads(event.pdu_json).get("type", ""))


async def _stream_page(
    events: RoomPageStore, room_id: str, from_pos: int, to: int | None, backwards: bool, limit: int,
    types: list[str] | None, not_types: list[str] | None, reader: str,
) -> tuple[list[StoredEvent], int | None, tuple[bool, list[tuple[int, str]]] | None]:
    """A page of the room's events whose types pass the filter; when the scan for it
    stopped early, the position of the last event it examined; and, when read with the
    page, the reader's (forgotten, membership history) for the access module.

    Exact type lists are filtered by the database, in the page's one transaction; a
    list with a `*` wildcard is matched here, reading the stream in batches until the
    page is full or MAX_SCANNED events were read: one request never walks a whole
    room, and the client continues from where the scan stopped.
    """
    if not any("*" in t for t in (types or []) + (not_types or [])):
        page, history = await events.room_page(room_id, from_pos, to, backwards, limit, types,
                                               not_types, reader)
        return page, None, history
    wanted = _type_pattern(types) if types is not None else None
    unwanted = _type_pattern(not_types) if not_types else None
    page: list[StoredEvent] = []
    position = from_pos
    scanned = 0
    while len(page) < limit:
        if scanned >= MAX_SCANNED:
            return page, position, None
        batch = await events.room_stream_events(room_id, position, to, backwards, _SCAN_BATCH)
        scanned += len(batch)
        for event in batch:
            event_type = _type_of(event)
            if (wanted is None or wanted.fullmatch(event_type)) and \
                    (unwanted is None or not unwanted.fullmatch(event_type)):
                page.append(event)
        if len(batch) < _SCAN_BATCH:
            break
        position = batch[-1].stream_ordering or 0
    return page[:limit], None, None


async def _state_at(view: RoomView, loaded: LoadedEvent) -> list[str]:
    groups = await view.state.state_groups_of([loaded.event.event_id])
    group = groups.get(loaded.event.event_id)
    if group is None:
        return []
    return sorted((await view.state.state_at_group(group)).values())


async def _members_of_senders(
    engine: RoomEngine, view: RoomView, room_id: str, user: str, events: list[LoadedEvent]
) -> list[JsonDict]:
    senders = {e.event.sender for e in events}
    members = await view.state.members(room_id)
    ids = [members[s][1] for s in sorted(senders) if s in members]
    loaded = await engine.get_events(ids)
    return await view.serialize([loaded[i] for i in ids if i in loaded], user, with_relations=False)
