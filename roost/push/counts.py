"""Unread notification counts held in memory, so that /sync need not ask PostgreSQL.

Every /sync answer carries each of its joined rooms' counts; with a message
waking twenty long polls, a query per answer was a measurable part of the
fan-out. The cache holds, per (user, room), the counts per thread as of the
evaluator's position. It is kept exact by construction:

- the evaluator adds each stored batch's notifications to the entries it holds
  (`add`), synchronously after the batch commits and before any /sync waiting on
  that position is released;
- a receipt of the user in the room, or an event the user sent there (sending
  reads the room), drops the entry (`drop`): it is read again from storage;
- an entry read from storage is kept only if no batch was being written and
  nothing was added or dropped anywhere while it was being read (`generation`;
  the evaluator calls `writing()` before its transaction), so a read that raced
  a batch or a receipt is used once and not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from twisted.internet import defer

    from roost.storage.push import PushActionStore

Counts = dict[str, tuple[int, int]]  # thread ('main' or a root) -> (notifications, highlights)
MAX_ENTRIES = 100_000


class CountsSource(Protocol):
    """Where /sync takes unread counts from: the evaluator of this process, or the counts
    that follow another process's evaluator (push/shared_counts.py)."""

    @property
    def counts(self) -> UnreadCache: ...

    def reached(self, position: int, timeout_s: float) -> defer.Deferred[None]: ...

    def has_reached(self, position: int) -> bool: ...


class UnreadCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[tuple[str, str], Counts] = OrderedDict()
        self._max = max_entries
        self.generation = 0
        self._writing = False
        self.hits = 0
        self.misses = 0

    def get(self, user_id: str, room_ids: Iterable[str]) -> tuple[dict[str, Counts], list[str]]:
        """(room -> counts held, rooms not held)."""
        found: dict[str, Counts] = {}
        missing: list[str] = []
        for room_id in room_ids:
            entry = self._entries.get((user_id, room_id))
            if entry is None:
                missing.append(room_id)
            else:
                found[room_id] = entry
        self.hits += len(found)
        self.misses += len(missing)
        return found, missing

    def put(self, user_id: str, read: dict[str, Counts], room_ids: list[str],
            generation: int) -> None:
        """Keep what storage said of `room_ids` (absent: nothing unread), if nothing changed
        since `generation` was read."""
        if generation != self.generation or self._writing:
            return
        for room_id in room_ids:
            self._entries[(user_id, room_id)] = dict(read.get(room_id, {}))
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def held(self, user_id: str, room_ids: list[str], position: int) -> dict[str, Counts] | None:
        """`read_through`'s answer when every room's counts are held (nothing to read), else
        None. `position`: as for `read_through`."""
        entries = self._entries
        found: dict[str, Counts] = {}
        for room_id in room_ids:
            entry = entries.get((user_id, room_id))
            if entry is None:
                return None
            found[room_id] = entry
        self.hits += len(found)
        return found

    async def read_through(self, user_id: str, room_ids: list[str], store: PushActionStore,
                           position: int) -> dict[str, Counts]:
        """room -> counts of every room given: held ones from here, the others read from
        storage and kept (see `put`). `position`: the events position the answer is for,
        which evaluation has reached here (`PushEvaluator.reached`); a cache that follows
        another process's evaluation (push/shared_counts.py) checks it."""
        counts, missing = self.get(user_id, room_ids)
        if missing:
            generation = self.generation
            read = await store.unread_counts(user_id, missing)
            self.put(user_id, read, missing, generation)
            counts.update(read)
        return counts

    def writing(self) -> None:
        """The evaluator is about to store a batch: reads from now on are not kept."""
        self.generation += 1
        self._writing = True

    def add(self, rows: list[Any], senders: Iterable[tuple[str, str]] = (),
            position: int = 0) -> None:
        """A committed batch: its push_actions rows (position, n, room, event, thread,
        actions, highlight, ts, users) and the (sender, room) pairs its events read;
        `position`, the evaluator's new position (for a cache that publishes its batches)."""
        self.generation += 1
        self._writing = False
        for pair in senders:
            self._entries.pop(pair, None)
        if not rows or not self._entries:
            return
        entries = self._entries
        for row in rows:
            room_id, thread, highlight, users = row[2], row[4], row[6], row[8]
            for user_id in users:
                entry = entries.get((user_id, room_id))
                if entry is not None:
                    count, lit = entry.get(thread, (0, 0))
                    entry[thread] = (count + 1, lit + (1 if highlight else 0))

    def clear(self) -> None:
        self.generation += 1
        self._writing = False
        self._entries.clear()

    def drop(self, pairs: Iterable[tuple[str, str]]) -> None:
        """(user, room) pairs whose read position moved."""
        self.generation += 1
        for pair in pairs:
            self._entries.pop(pair, None)

    def __len__(self) -> int:
        return len(self._entries)
