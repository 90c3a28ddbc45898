"""Reading room state: state groups, the current state, and memberships."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from roost.storage.database import Database, Txn

StateKey = tuple[str, str]


@dataclass(frozen=True)
class RoomHead:
    """What the engine needs to append to a room: loaded once per room per process."""

    room_id: str
    room_version: str
    current_state: dict[StateKey, str]
    extremities: list[str]
    max_depth: int
    state_group: int | None
    chain_length: int


class RoomStateStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def room_version(self, room_id: str) -> str | None:
        row = await self._db.run(
            "room_version",
            lambda t: t.query_one("SELECT room_version FROM rooms WHERE room_id = %s", (room_id,)),
        )
        return row[0] if row else None

    async def room_head(self, room_id: str) -> RoomHead | None:
        return await self._db.run("room_head", _room_head, room_id)

    async def current_state(self, room_id: str) -> dict[StateKey, str]:
        rows = await self._db.run(
            "current_state",
            lambda t: t.query(
                "SELECT type, state_key, event_id FROM current_state WHERE room_id = %s", (room_id,)
            ),
        )
        return {(r[0], r[1]): r[2] for r in rows}

    async def state_at_group(self, group: int) -> dict[StateKey, str]:
        return await self._db.run("state_at_group", _state_of_group, group)

    async def state_groups_of(self, event_ids: list[str]) -> dict[str, int | None]:
        rows = await self._db.run(
            "state_groups_of",
            lambda t: t.query(
                "SELECT event_id, state_group FROM events WHERE event_id = ANY(%s)", (event_ids,)
            ),
        )
        return {r[0]: r[1] for r in rows}

    async def state_group_delta(
        self, group: int
    ) -> tuple[int | None, int, dict[StateKey, str]] | None:
        """(prev_group, chain_length, the entries written for `group` itself), or None."""
        return await self._db.run("state_group_delta", _group_delta, group)

    async def rooms_for_user(self, user_id: str, memberships: tuple[str, ...]) -> dict[str, str]:
        """room_id -> membership for the user's current memberships among `memberships`."""
        rows = await self._db.run(
            "rooms_for_user",
            lambda t: t.query(
                "SELECT room_id, membership FROM current_state WHERE type = 'm.room.member'"
                " AND state_key = %s AND membership = ANY(%s)",
                (user_id, list(memberships)),
            ),
        )
        return {r[0]: r[1] for r in rows}

    async def rooms_for_user_with_newest(
        self, user_id: str, memberships: tuple[str, ...]
    ) -> tuple[dict[str, str], int]:
        """rooms_for_user, and the events position of the newest of those memberships."""
        rows = await self._db.run(
            "rooms_for_user_with_newest",
            lambda t: t.query(
                "SELECT c.room_id, c.membership, COALESCE(e.stream_ordering, 0)"
                " FROM current_state c LEFT JOIN events e ON e.event_id = c.event_id"
                " WHERE c.type = 'm.room.member' AND c.state_key = %s"
                " AND c.membership = ANY(%s)",
                (user_id, list(memberships)),
            ),
        )
        return {r[0]: r[1] for r in rows}, max((int(r[2]) for r in rows), default=0)

    async def rooms_for_user_at(self, user_id: str, position: int) -> dict[str, str]:
        """room_id -> the user's membership as of events position `position`.

        The latest membership row at or below the position in each room: what
        the current state held then for rooms whose membership only changes by
        new member events (state resolution replacing one with an older one is
        the rare exception, and the live cache serves every token it covers).
        """
        rows = await self._db.run(
            "rooms_for_user_at",
            lambda t: t.query(
                "SELECT DISTINCT ON (room_id) room_id, membership FROM room_memberships"
                " WHERE user_id = %s AND stream_ordering <= %s"
                " ORDER BY room_id, stream_ordering DESC",
                (user_id, position),
            ),
        )
        return {r[0]: r[1] for r in rows}

    async def share_a_room(self, user_a: str, user_b: str) -> bool:
        """Whether both users are joined to some room (who may see whose presence)."""
        row = await self._db.run(
            "share_a_room",
            lambda t: t.query_one(
                "SELECT 1 FROM current_state a JOIN current_state b ON b.room_id = a.room_id"
                " WHERE a.type = 'm.room.member' AND a.state_key = %s AND a.membership = 'join'"
                " AND b.type = 'm.room.member' AND b.state_key = %s AND b.membership = 'join'"
                " LIMIT 1",
                (user_a, user_b),
            ),
        )
        return row is not None

    async def members(self, room_id: str) -> dict[str, tuple[str, str]]:
        """user_id -> (membership, member event id) from the current state."""
        rows = await self._db.run(
            "members",
            lambda t: t.query(
                "SELECT state_key, membership, event_id FROM current_state"
                " WHERE room_id = %s AND type = 'm.room.member'",
                (room_id,),
            ),
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    async def membership_history(self, room_id: str, user_id: str) -> list[tuple[int, str]]:
        """(stream_ordering, membership) of every change of the user's membership, in order."""
        rows = await self._db.run(
            "membership_history",
            lambda t: t.query(
                "SELECT stream_ordering, membership FROM room_memberships"
                " WHERE room_id = %s AND user_id = %s ORDER BY stream_ordering",
                (room_id, user_id),
            ),
        )
        return [(r[0], r[1]) for r in rows]

    async def reader_history(self, room_id: str, user_id: str) -> tuple[bool, list[tuple[int, str]]]:
        """(whether the user forgot the room, their membership_history) in one round trip:
        what history visibility needs of a reader on every page it reads. The forgotten
        row is read whatever the membership (a user who just joined again may still
        have one until the join's handler removes it)."""
        return await self._db.run("reader_history", reader_history_txn, room_id, user_id)

    async def server_membership_histories(
        self, room_id: str, server_name: str
    ) -> dict[str, list[tuple[int, str]]]:
        """user_id -> (stream_ordering, membership) history, for every user of `server_name`
        who ever had a membership in the room (what server visibility reads)."""
        suffix = ":" + server_name
        rows = await self._db.run(
            "server_membership_histories",
            lambda t: t.query(
                "SELECT m.user_id, m.stream_ordering, m.membership FROM room_memberships m"
                " WHERE m.room_id = %s AND m.user_id IN (SELECT state_key FROM current_state"
                "  WHERE room_id = %s AND type = 'm.room.member'"
                "  AND right(state_key, %s) = %s)"
                " ORDER BY m.stream_ordering",
                (room_id, room_id, len(suffix), suffix),
            ),
        )
        result: dict[str, list[tuple[int, str]]] = {}
        for user_id, position, membership in rows:
            result.setdefault(user_id, []).append((position, membership))
        return result

    async def state_history(
        self, room_id: str, event_type: str, state_key: str
    ) -> list[tuple[int, str]]:
        """(stream_ordering, event_id) of every accepted state event of that key, in order."""
        rows = await self._db.run(
            "state_history",
            lambda t: t.query(
                "SELECT stream_ordering, event_id FROM events WHERE room_id = %s AND type = %s"
                " AND state_key = %s AND stream_ordering IS NOT NULL"
                " AND rejected_reason IS NULL AND NOT soft_failed ORDER BY stream_ordering",
                (room_id, event_type, state_key),
            ),
        )
        return [(r[0], r[1]) for r in rows]


def reader_history_txn(txn: Txn, room_id: str, user_id: str) -> tuple[bool, list[tuple[int, str]]]:
    """RoomStateStore.reader_history's reads, for a transaction that also reads the
    events the answer is for (RoomPageStore.room_page)."""
    forgotten = txn.query_one(
        "SELECT 1 FROM forgotten_rooms WHERE user_id = %s AND room_id = %s",
        (user_id, room_id)) is not None
    rows = txn.query(
        "SELECT stream_ordering, membership FROM room_memberships"
        " WHERE room_id = %s AND user_id = %s ORDER BY stream_ordering",
        (room_id, user_id))
    return forgotten, [(r[0], r[1]) for r in rows]


def _room_head(txn: Txn, room_id: str) -> RoomHead | None:
    room = txn.query_one("SELECT room_version FROM rooms WHERE room_id = %s", (room_id,))
    if room is None:
        return None
    state = {
        (r[0], r[1]): r[2]
        for r in txn.query(
            "SELECT type, state_key, event_id FROM current_state WHERE room_id = %s", (room_id,)
        )
    }
    extremities = [
        r[0]
        for r in txn.query(
            "SELECT f.event_id FROM forward_extremities f JOIN events e USING (event_id)"
            " WHERE f.room_id = %s ORDER BY e.depth, e.event_id",
            (room_id,),
        )
    ]
    depth_row = txn.query_one(
        "SELECT COALESCE(MAX(depth), 0) FROM events WHERE room_id = %s AND NOT outlier", (room_id,)
    )
    group_row = txn.query_one(
        "SELECT e.state_group, g.chain_length FROM events e JOIN state_groups g"
        " ON g.id = e.state_group WHERE e.room_id = %s AND e.stream_ordering IS NOT NULL"
        " ORDER BY e.stream_ordering DESC LIMIT 1",
        (room_id,),
    )
    group, chain = (group_row[0], group_row[1]) if group_row else (None, 0)
    # Remote events can leave the current state in a group no later event points at
    # (a merged fork, a soft-failed last event): room_state_heads then names it.
    head_row = txn.query_one(
        "SELECT h.state_group, g.chain_length FROM room_state_heads h JOIN state_groups g"
        " ON g.id = h.state_group WHERE h.room_id = %s AND h.stream_ordering >= COALESCE("
        " (SELECT MAX(stream_ordering) FROM events WHERE room_id = %s), 0)",
        (room_id, room_id),
    )
    if head_row is not None:
        group, chain = head_row[0], head_row[1]
    return RoomHead(
        room_id, room[0], state, extremities, int(depth_row[0]) if depth_row else 0,
        group, chain,
    )


def _group_delta(txn: Txn, group: int) -> tuple[int | None, int, dict[StateKey, str]] | None:
    row = txn.query_one("SELECT prev_group, chain_length FROM state_groups WHERE id = %s",
                        (group,))
    if row is None:
        return None
    entries = txn.query(
        "SELECT type, state_key, event_id FROM state_group_entries WHERE state_group = %s",
        (group,),
    )
    return row[0], row[1], {(r[0], r[1]): r[2] for r in entries}


def _state_of_group(txn: Txn, group: int) -> dict[StateKey, str]:
    """Walk the delta chain from `group` back to its snapshot; nearer deltas win."""
    rows: list[tuple[Any, ...]] = txn.query(
        "WITH RECURSIVE chain(id, prev_group, n) AS ("
        "  SELECT id, prev_group, 0 FROM state_groups WHERE id = %s"
        "  UNION ALL"
        "  SELECT g.id, g.prev_group, c.n + 1 FROM state_groups g JOIN chain c ON g.id = c.prev_group"
        ")"
        " SELECT DISTINCT ON (s.type, s.state_key) s.type, s.state_key, s.event_id"
        " FROM chain c JOIN state_group_entries s ON s.state_group = c.id"
        " ORDER BY s.type, s.state_key, c.n",
        (group,),
    )
    return {(r[0], r[1]): r[2] for r in rows}


class UserRoomsCache:
    """Each user's current memberships, kept in memory and dropped when they change.

    /sync asks "which rooms is this user in" on every call, and long-poll
    wake-ups make that thousands of times a second under fan-out
    (bench/sync_fanout.py). What /sync reads here is exact at the token it
    answers with, by construction:

    - The cache hears of a membership change (the events stream announces the
      member in `users`) before any reader is woken (`Notifier.add_cache`),
      and only once the change's position is readable (storage/streams.py):
      a reader whose token covers the change finds the entry already dropped.
    - A load that raced with a change (read before the change committed,
      finished after it was announced) is not kept: each user's drops are
      counted and a load is stored only if none happened while it ran.
    - An entry can still be ahead of a token (it was read after a change
      committed that is not yet readable): `rooms_at` compares the entry's
      newest membership position with the token and, when it is ahead, reads
      the memberships at the token from storage instead.

    `last_change` remembers the events position of each user's latest
    membership change seen, so a sync can skip looking for changes it knows
    there are none of.
    """

    MAX_USERS = 100_000

    def __init__(self, store: RoomStateStore) -> None:
        self._store = store
        self._rooms: dict[str, dict[str, str]] = {}
        self._newest: dict[str, int] = {}  # user -> position of their newest membership held
        self._drops: dict[str, int] = {}  # user -> drops so far (see rooms())
        self._epoch = 0  # bumped when _drops is cleared, so in-flight loads are not kept
        self.last_change: dict[str, int] = {}
        self.watching_since: int | None = None

    def on_change(self, change: Any) -> None:
        if change.stream != "events":
            return
        for user in change.users:
            self._rooms.pop(user, None)
            self._newest.pop(user, None)
            self._drops[user] = self._drops.get(user, 0) + 1
            self.last_change[user] = change.position
        if len(self.last_change) > self.MAX_USERS:
            self.last_change.clear()
            self.watching_since = change.position
        if len(self._drops) > self.MAX_USERS:
            self._drops.clear()
            self._epoch += 1

    async def rooms(self, user_id: str) -> dict[str, str]:
        """room_id -> membership for every room the user is joined, invited, left or banned."""
        cached = self._rooms.get(user_id)
        if cached is None:
            cached, _ = await self._load(user_id)
        return cached

    def cached(self, user_id: str) -> dict[str, str] | None:
        """The user's memberships if held (the shared dict: never modify it), else None."""
        return self._rooms.get(user_id)

    def held_at(self, user_id: str, position: int) -> dict[str, str] | None:
        """`rooms_at` when it needs no read (the held memberships are those at `position`),
        else None: a sync's every call, without a coroutine."""
        cached = self._rooms.get(user_id)
        if cached is not None and self._newest.get(user_id, 0) <= position:
            return cached
        return None

    async def rooms_at(self, user_id: str, position: int) -> dict[str, str]:
        """The user's memberships exactly as of events position `position` (a token's)."""
        cached = self._rooms.get(user_id)
        newest = self._newest.get(user_id, 0)
        if cached is None:
            cached, newest = await self._load(user_id)
        if newest <= position:
            return cached
        return await self._store.rooms_for_user_at(user_id, position)

    async def _load(self, user_id: str) -> tuple[dict[str, str], int]:
        before = (self._epoch, self._drops.get(user_id, 0))
        rooms, newest = await self._store.rooms_for_user_with_newest(
            user_id, ("join", "invite", "leave", "ban", "knock"))
        if before == (self._epoch, self._drops.get(user_id, 0)):
            if len(self._rooms) >= self.MAX_USERS:
                self._rooms.clear()
                self._newest.clear()
            self._rooms[user_id] = rooms
            self._newest[user_id] = newest
        return rooms, newest

    def changed_since(self, user_id: str, position: int) -> bool:
        """False only when no membership change of the user can lie after `position`."""
        if self.watching_since is None or position < self.watching_since:
            return True
        return self.last_change.get(user_id, 0) > position
