"""Stream positions: which writes a reader may see, and when they are announced.

Each syncable change gets a position in its stream. Writes commit out of
order (two rooms persist in parallel), so a reader may only advance to the
largest position below which every allocated write has finished (the
persisted-up-to position, `current`): then an incremental read between two
positions never skips a write that commits late and never repeats one.

The generator also announces the changes, so that an announcement can never
run ahead of what readers may see, nor be lost behind a slower write: a
writer hands `finish` the rooms and users its write concerns, and those are
announced on the notifier only once `current` covers the write, together
with every other finished write that became visible at the same moment
(write 5 finishing before write 4 is announced when 4 finishes, with 4's
rooms and users and its own). Announcing `(stream, current)` from the writer
instead would tell waiters about a change they could not yet read, and say
nothing when it became readable: a missed wake-up.

Positions are allocated in memory from the table's maximum at start: one
process writes each stream. With several processes, shared_streams.py keeps
this interface and this promise across them.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from roost.storage.stream_positions import Fence


class Announcer(Protocol):
    def notify(self, stream: str, position: int, rooms: Iterable[str] = (),
               users: Iterable[str] = ()) -> None: ...


class StreamIdGenerator:
    # What its writes check in their transaction among several writers
    # (shared_streams.SharedStream.fence); the only writer has nothing to check.
    fence: Fence | None = None

    def __init__(self, current_max: int, name: str = "",
                 notifier: Announcer | None = None) -> None:
        self.name = name
        self._notifier = notifier
        self._next = current_max + 1
        self._persisted = current_max
        self._pending: list[int] = []  # heap of allocated, unfinished positions
        self._finished: set[int] = set()
        # What finished writes concern, by their last position, held until `current`
        # covers them.
        self._held: dict[int, tuple[frozenset[str], frozenset[str]]] = {}
        self._listeners: list[Callable[[int], None]] = []

    def announce_to(self, notifier: Announcer, name: str) -> None:
        """Announce this stream's visible changes on `notifier` as `name`."""
        self._notifier, self.name = notifier, name

    def allocate(self, count: int = 1) -> list[int]:
        """Reserve `count` consecutive positions; each must later be `finish`ed."""
        ids = list(range(self._next, self._next + count))
        self._next += count
        for i in ids:
            heapq.heappush(self._pending, i)
        return ids

    def finish(self, ids: list[int], rooms: Iterable[str] = (),
               users: Iterable[str] = ()) -> None:
        """Mark positions written (committed, or abandoned with no rooms or users).

        Advances the persisted position if it can and then, only then, announces
        (stream, new position) with the rooms and users of every write now visible.
        """
        rooms, users = frozenset(rooms), frozenset(users)
        if ids and (rooms or users):
            last = max(ids)
            held_rooms, held_users = self._held.get(last, (frozenset(), frozenset()))
            self._held[last] = (held_rooms | rooms, held_users | users)
        self._finished.update(ids)
        advanced = False
        while self._pending and self._pending[0] in self._finished:
            done = heapq.heappop(self._pending)
            self._finished.discard(done)
            self._persisted = done
            advanced = True
        if not self._pending:
            self._persisted = max(self._persisted, self._next - 1)
        if not advanced:
            return
        rooms_now: set[str] = set()
        users_now: set[str] = set()
        for position in [p for p in self._held if p <= self._persisted]:
            held_rooms, held_users = self._held.pop(position)
            rooms_now |= held_rooms
            users_now |= held_users
        for listener in list(self._listeners):
            listener(self._persisted)
        if self._notifier is not None:
            self._notifier.notify(self.name, self._persisted, rooms_now, users_now)

    @property
    def current(self) -> int:
        """The largest position at and below which every write has finished."""
        return self._persisted

    def on_advance(self, listener: Callable[[int], None]) -> None:
        self._listeners.append(listener)
