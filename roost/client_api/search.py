"""POST /search: full-text search over the room events a user may see.

The index (roost.storage.search, PostgreSQL full-text search) finds matches
in the rooms the user is or was in; every match is then put to the access
module like any other read (`RoomView.visible`), and redacted events are
dropped, so a search never shows what /messages would not; nor does it find
what users the searcher ignores (m.ignored_user_list) sent. Results are
ordered by rank or by recency; `next_batch` continues after the last match
examined (an offset for rank, a stream position for recency, so new messages
do not shift a recency page).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import replace
from typing import Any

from roost.client_api.errors import bad_json, invalid_param, missing_param
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.room_view import RoomView
from roost.client_api.search_index import SearchIndexer
from roost.rooms.access import STATE
from roost.rooms.engine import RoomEngine
from roost.rooms.engine_types import LoadedEvent
from roost.storage.room_pages import RoomPageStore
from roost.storage.search import SearchFilter, SearchHit, SearchStore
from roost.storage.sync_data import AccountDataStore

KEYS = ("content.body", "content.name", "content.topic")
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
DEFAULT_CONTEXT = 5
MAX_CONTEXT = 20
# Pages of matches read to fill one answer when many are hidden from the user.
MAX_ROUNDS = 5


def _strings(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"{name} must be a list of strings")
    return value


def _count(value: Any, name: str, default: int, maximum: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_json(f"{name} must be an integer")
    if value < 0:
        raise invalid_param(f"{name} must not be negative")
    return min(value, maximum)


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise bad_json(f"{name} must be a boolean")
    return value


def _object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_json(f"{name} must be an object")
    return value


def _encode_batch(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _decode_batch(token: str, order: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        raise invalid_param("next_batch is not a token this server gave") from None
    if not isinstance(data, dict) or data.get("order") != order or not isinstance(
            data.get("at"), int) or isinstance(data.get("at"), bool):
        raise invalid_param("next_batch is not a token this server gave for this search")
    return data


class RoomEventSearch:
    def __init__(self, store: SearchStore, indexer: SearchIndexer, engine: RoomEngine,
                 view: RoomView, events: RoomPageStore, account_data: AccountDataStore) -> None:
        self._account_data = account_data
        self._store = store
        self._indexer = indexer
        self._engine = engine
        self._view = view
        self._events = events

    async def search(self, user_id: str, criteria: dict[str, Any], next_batch: str | None
                     ) -> JsonDict:
        term = criteria.get("search_term")
        if term is None:
            raise missing_param("search_term")
        if not isinstance(term, str):
            raise bad_json("search_term must be a string")
        keys = _strings(criteria.get("keys"), "keys") or list(KEYS)
        if any(k not in KEYS for k in keys):
            raise invalid_param(f"keys must be among {', '.join(KEYS)}")
        order = criteria.get("order_by", "rank")
        if order not in ("rank", "recent"):
            raise invalid_param("order_by must be rank or recent")
        raw_filter = _object(criteria, "filter")
        limit = _count(raw_filter.get("limit"), "filter.limit", DEFAULT_LIMIT, MAX_LIMIT)
        rooms_wanted = _strings(raw_filter.get("rooms"), "filter.rooms")
        rooms_unwanted = set(_strings(raw_filter.get("not_rooms"), "filter.not_rooms") or [])
        contains_url = raw_filter.get("contains_url")
        if contains_url is not None and not isinstance(contains_url, bool):
            raise bad_json("filter.contains_url must be a boolean")
        filt = SearchFilter(
            senders=_strings(raw_filter.get("senders"), "filter.senders"),
            not_senders=_strings(raw_filter.get("not_senders"), "filter.not_senders"),
            types=_strings(raw_filter.get("types"), "filter.types"),
            not_types=_strings(raw_filter.get("not_types"), "filter.not_types"),
            contains_url=contains_url,
        )
        context = criteria.get("event_context")
        if context is not None and not isinstance(context, dict):
            raise bad_json("event_context must be an object")
        before_n = after_n = 0
        with_profile = False
        if context is not None:
            before_n = _count(context.get("before_limit"), "before_limit", DEFAULT_CONTEXT,
                              MAX_CONTEXT)
            after_n = _count(context.get("after_limit"), "after_limit", DEFAULT_CONTEXT,
                             MAX_CONTEXT)
            with_profile = _flag(context, "include_profile")
        include_state = _flag(criteria, "include_state")
        group_keys = _group_keys(_object(criteria, "groupings"))
        batch = _decode_batch(next_batch, order) if next_batch is not None else None

        ignored = await self._ignored(user_id)
        if ignored:
            filt = replace(filt, not_senders=sorted({*(filt.not_senders or []), *ignored}))
        rooms = await self._searchable_rooms(user_id, rooms_wanted, rooms_unwanted)
        await self._indexer.catch_up()
        results, more_at, count = await self._matches(
            user_id, rooms, term, keys, filt, order == "rank", limit, batch)

        body: JsonDict = {
            "count": count,
            "highlights": await self._highlights(term),
            "results": [],
        }
        for hit, loaded in results:
            entry: JsonDict = {"rank": hit.rank,
                               "result": (await self._view.serialize([loaded], user_id))[0]}
            if context is not None:
                entry["context"] = await self._context(user_id, loaded, before_n, after_n,
                                                       with_profile)
            body["results"].append(entry)
        if more_at is not None:
            body["next_batch"] = _encode_batch({"order": order, "at": more_at})
        if include_state:
            body["state"] = await self._state(user_id, {hit.room_id for hit, _ in results})
        if group_keys:
            body["groups"] = _groups(group_keys, results)
        return {"search_categories": {"room_events": body}}

    async def _ignored(self, user_id: str) -> set[str]:
        """The users in the user's m.ignored_user_list: their events are never found."""
        content = await self._account_data.get(user_id, "", "m.ignored_user_list")
        users = content.get("ignored_users") if isinstance(content, dict) else None
        return {u for u in users if isinstance(u, str)} if isinstance(users, dict) else set()

    async def _searchable_rooms(self, user_id: str, wanted: list[str] | None,
                                unwanted: set[str]) -> list[str]:
        """The rooms the user is or was in whose events the access module lets them read."""
        candidates = await self._view.state.rooms_for_user(user_id, ("join", "leave", "ban"))
        rooms = []
        for room_id in sorted(candidates):
            if room_id in unwanted or (wanted is not None and room_id not in wanted):
                continue
            if await self._view.can_see_room(room_id, user_id):
                rooms.append(room_id)
        return rooms

    async def _matches(self, user_id: str, rooms: list[str], term: str, keys: list[str],
                       filt: SearchFilter, by_rank: bool, limit: int,
                       batch: dict[str, Any] | None,
                       ) -> tuple[list[tuple[SearchHit, LoadedEvent]], int | None, int]:
        """Up to `limit` visible matches, where the next page starts (or None), the count."""
        offset = batch["at"] if batch is not None and by_rank else 0
        before = batch["at"] if batch is not None and not by_rank else None
        found: list[tuple[SearchHit, LoadedEvent]] = []
        count = 0
        if limit == 0:
            _, count = await self._store.search(rooms, term, keys, filt, by_rank, 0)
            return [], None, count
        for _ in range(MAX_ROUNDS):
            hits, count = await self._store.search(rooms, term, keys, filt, by_rank, limit,
                                                   offset, before)
            visible = await self._visible(user_id, hits)
            for hit in hits:
                offset += 1
                before = hit.stream_ordering
                loaded = visible.get(hit.event_id)
                if loaded is not None:
                    found.append((hit, loaded))
                if len(found) == limit:
                    return found, offset if by_rank else before, count
            if len(hits) < limit:
                return found, None, count
        return found, offset if by_rank else before, count

    async def _visible(self, user_id: str, hits: list[SearchHit]) -> dict[str, LoadedEvent]:
        loaded = await self._engine.get_events([h.event_id for h in hits])
        by_room: dict[str, list[LoadedEvent]] = {}
        for hit in hits:
            event = loaded.get(hit.event_id)
            if event is not None and not event.redacted_by:
                by_room.setdefault(hit.room_id, []).append(event)
        visible: dict[str, LoadedEvent] = {}
        for room_id, events in by_room.items():
            for event in await self._view.visible(room_id, user_id, events):
                visible[event.event.event_id] = event
        return visible

    async def _highlights(self, term: str) -> list[str]:
        words = {w.strip("\"'()-").lower() for w in term.split()}
        words.discard("")
        words.discard("or")
        return sorted(words | set(await self._store.lexemes(term)))

    async def _context(self, user_id: str, loaded: LoadedEvent, before_n: int, after_n: int,
                       with_profile: bool) -> JsonDict:
        room_id = loaded.event.room_id
        position = loaded.stream_ordering or 0
        before: list[LoadedEvent] = []
        after: list[LoadedEvent] = []
        if before_n:
            before = await self._view.visible(room_id, user_id, self._engine.loaded(
                await self._events.room_stream_events(room_id, position, None, True, before_n)))
        if after_n:
            after = await self._view.visible(room_id, user_id, self._engine.loaded(
                await self._events.room_stream_events(room_id, position, None, False, after_n)))
        context: JsonDict = {
            "events_before": await self._view.serialize(before, user_id),
            "events_after": await self._view.serialize(after, user_id),
            # Tokens for /messages, placed as /context places them.
            "start": f"s{(before[-1].stream_ordering or 1) - 1 if before else position - 1}",
            "end": f"s{after[-1].stream_ordering if after else position}",
        }
        if with_profile:
            senders = {e.event.sender for e in [loaded, *before, *after]}
            context["profile_info"] = await self._profiles(room_id, senders)
        return context

    async def _profiles(self, room_id: str, senders: set[str]) -> JsonDict:
        """Each sender's display name and avatar from their member event now (fields unset are
        left out)."""
        members = await self._view.state.members(room_id)
        ids = [members[s][1] for s in sorted(senders) if s in members]
        loaded = await self._engine.get_events(ids)
        profiles: JsonDict = {}
        for event_id in ids:
            event = loaded.get(event_id)
            if event is None:
                continue
            content = event.event.content
            profiles[event.event.state_key or ""] = {
                k: content[k] for k in ("displayname", "avatar_url")
                if isinstance(content.get(k), str)}
        return profiles

    async def _state(self, user_id: str, room_ids: set[str]) -> JsonDict:
        state: JsonDict = {}
        for room_id in sorted(room_ids):
            ids = await self._view.access.readable_state(room_id, user_id, STATE)
            if ids is None:
                continue
            loaded = await self._engine.get_events(sorted(ids.values()))
            state[room_id] = await self._view.serialize(list(loaded.values()), user_id,
                                                        with_relations=False)
        return state


def _group_keys(groupings: dict[str, Any]) -> list[str]:
    group_by = groupings.get("group_by")
    if group_by is None:
        return []
    if not isinstance(group_by, list) or not all(isinstance(g, dict) for g in group_by):
        raise bad_json("groupings.group_by must be a list of objects")
    keys = [g.get("key") for g in group_by]
    if any(k not in ("room_id", "sender") for k in keys):
        raise invalid_param("a grouping key must be room_id or sender")
    return [str(k) for k in keys]


def _groups(keys: list[str], results: list[tuple[SearchHit, LoadedEvent]]) -> JsonDict:
    """Each grouping of this page's results: group value -> its event ids, in result order."""
    groups: JsonDict = {}
    for key in keys:
        grouped: dict[str, JsonDict] = {}
        for hit, loaded in results:
            value = hit.room_id if key == "room_id" else loaded.event.sender
            group = grouped.setdefault(value, {"order": len(grouped) + 1, "results": []})
            group["results"].append(hit.event_id)
        groups[key] = grouped
    return groups


def register(router: Router, search: RoomEventSearch) -> None:
    async def post_search(req: ApiRequest) -> JsonDict:
        body = req.json()
        categories = body.get("search_categories")
        if categories is None:
            raise missing_param("search_categories")
        if not isinstance(categories, dict):
            raise bad_json("search_categories must be an object")
        criteria = categories.get("room_events")
        if criteria is None:
            return {"search_categories": {}}
        if not isinstance(criteria, dict):
            raise bad_json("room_events must be an object")
        return await search.search(req.user.user_id, criteria, req.arg("next_batch"))

    router.add("POST", f"{CLIENT_PREFIX}/search", post_search)
