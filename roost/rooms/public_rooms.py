"""The public room directory's entries and pages, shared by the client API's
/publicRooms and the federation's: one shape, one search, one pagination.

Pure: the caller hands in each room's directory state (event type -> content).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

JsonDict = dict[str, Any]

# (entry key, state event type, content field) of the optional string fields.
_STRING_FIELDS = (("name", "m.room.name", "name"), ("topic", "m.room.topic", "topic"),
                  ("canonical_alias", "m.room.canonical_alias", "alias"),
                  ("avatar_url", "m.room.avatar", "url"))


class BadDirectoryQuery(ValueError):
    """limit, since or filter of a /publicRooms request has the wrong type."""


def parse_query(body: Mapping[str, Any], limit_arg: int | None, since_arg: str | None
                ) -> tuple[int | None, str | None, str | None]:
    """(limit, since, search term) from a POST body or the GET query arguments."""
    limit = body.get("limit", limit_arg)
    since = body.get("since", since_arg)
    search = body.get("filter") or {}
    if (limit is not None and (not isinstance(limit, int) or isinstance(limit, bool))) \
            or (since is not None and not isinstance(since, str)) or not isinstance(search, dict):
        raise BadDirectoryQuery("limit must be an integer, since a string and filter an object")
    term = search.get("generic_search_term")
    return limit, since, term if isinstance(term, str) and term else None


def directory_entry(room_id: str, joined_members: int,
                    contents: Mapping[str, Mapping[str, Any]]) -> JsonDict:
    """One room as the directory lists it, from its directory state's contents."""
    entry: JsonDict = {
        "room_id": room_id,
        "num_joined_members": joined_members,
        "world_readable": contents.get("m.room.history_visibility", {}).get(
            "history_visibility") == "world_readable",
        "guest_can_join": contents.get("m.room.guest_access", {}).get("guest_access") == "can_join",
        "join_rule": contents.get("m.room.join_rules", {}).get("join_rule", "invite"),
    }
    for key, event_type, field in _STRING_FIELDS:
        value = contents.get(event_type, {}).get(field)
        if isinstance(value, str):
            entry[key] = value
    room_type = contents.get("m.room.create", {}).get("type")
    if isinstance(room_type, str):
        entry["room_type"] = room_type
    return entry


async def entries(rooms: Sequence[Any], load_contents: Callable[[list[str]], Awaitable[
        Mapping[str, Mapping[str, Any]]]]) -> list[JsonDict]:
    """Entries for directory rows (room_id, joined_members, state: key -> event id),
    loading every room's state events in one call (event id -> content)."""
    contents = await load_contents([eid for room in rooms for eid in room.state.values()])
    return [
        directory_entry(room.room_id, room.joined_members,
                        {key[0]: contents[eid] for key, eid in room.state.items() if eid in contents})
        for room in rooms
    ]


# A page holds at most this many rooms (and this many when the client names no limit).
MAX_PAGE = 500
DEFAULT_PAGE = 100


def page_window(since: str | None, limit: int | None) -> tuple[int, int]:
    """(offset, limit) of the page a `p<offset>` token and a limit ask for, capped."""
    offset = int(since[1:]) if since and since[1:].isdigit() and len(since) < 12 else 0
    size = DEFAULT_PAGE if limit is None or limit <= 0 else min(limit, MAX_PAGE)
    return offset, size


def cut_page(chunk: list[JsonDict], offset: int, limit: int, total: int) -> JsonDict:
    """The answer for one page the database cut, with `p<offset>` tokens."""
    result: JsonDict = {"chunk": chunk, "total_room_count_estimate": total}
    if offset + len(chunk) < total:
        result["next_batch"] = f"p{offset + len(chunk)}"
    if offset > 0:
        result["prev_batch"] = f"p{max(0, offset - limit)}"
    return result

