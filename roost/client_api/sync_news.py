"""The new events of a range, grouped by room once for every receiver it wakes.

Every receiver woken by one change asks the builder for the same range
(since, now] of events: the sync window's events of it are grouped by room
once and kept for the newest range asked, and each receiver keeps its rooms
of them. Exact: the events of a range never change once it is readable
(sync_queries.RecentEvents), and a range holding more events than a receiver
may get is cut per receiver.
"""

from __future__ import annotations

from roost.client_api.sync_filter import SyncFilter
from roost.storage.events import StoredEvent
from roost.storage.sync_queries import RecentEvents

MAX_INCREMENTAL_EVENTS = 5000
Grouped = dict[str, list[StoredEvent]]


class NewsWindow:
    """The newest range's new events by room ((after, upto), by room)."""

    def __init__(self, recent: RecentEvents) -> None:
        self._recent = recent
        self._news: tuple[tuple[int, int], Grouped] = ((0, -1), {})

    def forget(self) -> None:
        """Drop the kept grouping (tests: make the next receiver read for itself)."""
        self._news = ((0, -1), {})

    async def by_room(self, after: int, upto: int, memberships: dict[str, str],
                      filt: SyncFilter) -> Grouped:
        """The new events in (after, upto] of the rooms the user is joined to and the filter
        wants, by room, oldest first (at most the newest MAX_INCREMENTAL_EVENTS of them)."""
        key = (after, upto)
        if self._news[0] == key:
            grouped = self._news[1]
        else:
            fresh = await self._recent.window(after, upto)
            if fresh is None:  # not in memory: read the range for every joined room
                fresh = await self._recent.in_range(
                    [r for r, m in memberships.items() if m == "join" and filt.wants_room(r)],
                    after, upto, MAX_INCREMENTAL_EVENTS)
                return by_room(fresh)
            if len(fresh) > MAX_INCREMENTAL_EVENTS:  # cut after picking the user's rooms
                return by_room([e for e in fresh if memberships.get(e.room_id) == "join"
                                and filt.wants_room(e.room_id)][-MAX_INCREMENTAL_EVENTS:])
            grouped = by_room(fresh)
            if upto >= self._news[0][1]:
                self._news = (key, grouped)
        return _users_rooms(grouped, memberships, filt)

    def held(self, after: int, upto: int, memberships: dict[str, str],
             filt: SyncFilter) -> Grouped | None:
        """`by_room`'s answer when it needs no await (no read), else None."""
        grouped = self.grouped(after, upto)
        return None if grouped is None else _users_rooms(grouped, memberships, filt)

    def grouped(self, after: int, upto: int) -> Grouped | None:
        """Every new event of (after, upto] by room, when known without an await: the range
        kept, or one the sync window holds (grouped and kept here as `by_room` keeps it),
        else None. Its lists are shared: nothing may modify them."""
        news = self._news
        if news[0] == (after, upto):
            return news[1]
        fresh = self._recent.held_window(after, upto)
        if fresh is None or len(fresh) > MAX_INCREMENTAL_EVENTS:
            return None  # (read, or cut per receiver, by `by_room`)
        grouped = by_room(fresh)
        if upto >= news[0][1]:
            self._news = ((after, upto), grouped)
        return grouped


def _users_rooms(grouped: Grouped, memberships: dict[str, str], filt: SyncFilter) -> Grouped:
    return {room_id: raw for room_id, raw in grouped.items()
            if memberships.get(room_id) == "join" and filt.wants_room(room_id)}


def by_room(events: list[StoredEvent]) -> Grouped:
    """Events grouped by room, each room's oldest first, rooms in order of first event."""
    grouped: Grouped = {}
    for stored in events:
        grouped.setdefault(stored.room_id, []).append(stored)
    return grouped
