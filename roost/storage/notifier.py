"""The one notifier: wakes whatever waits for a stream to move.

Lower layers announce only `(stream, position)` and which rooms and users the
change concerns; readers (long-poll /sync, WebSocket connections, the
federation sender) wake and pull what lies between two positions from
storage. With several processes, other processes' changes arrive over the
replication bus and are fed in here by their stream (shared_streams.py), in
the same order: the messages are plain data.

Order is defined, not left to a set's: every change goes first to the caches
(`add_cache`, in the order they were added), then to the readers
(`add_listener`, in the order they were added). A woken reader may run at
once, inside `notify`, and read through a cache: the caches must already
know of the change by then, or the reader would answer with a token that
covers the change and data that does not (a kick served as a join).
Announcements come from `StreamIdGenerator.finish`, only once the change's
position is readable (storage/streams.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StreamChange:
    stream: str
    position: int
    rooms: frozenset[str] = field(default_factory=frozenset)
    users: frozenset[str] = field(default_factory=frozenset)


Listener = Callable[[StreamChange], None]


class Notifier:
    def __init__(self) -> None:
        # dicts as ordered sets: insertion order, O(1) removal.
        self._caches: dict[Listener, None] = {}
        self._listeners: dict[Listener, None] = {}
        self.positions: dict[str, int] = {}
        # Bumped by every announcement, before anyone hears of it: a reader that computed
        # something from stream positions may keep it while this has not moved, since
        # every position that readers read moves only together with an announcement.
        self.version = 0

    def add_cache(self, listener: Listener) -> None:
        """Call `listener` on every change, before any reader hears of it."""
        self._caches[listener] = None

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` on every change; returns the function that removes it."""
        self._listeners[listener] = None
        return lambda: self.remove_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling `listener`; nothing happens if it is not registered."""
        self._listeners.pop(listener, None)

    def notify(
        self, stream: str, position: int, rooms: Iterable[str] = (), users: Iterable[str] = ()
    ) -> None:
        self.version += 1
        if position > self.positions.get(stream, 0):
            self.positions[stream] = position
        change = StreamChange(stream, position, frozenset(rooms), frozenset(users))
        for cache in list(self._caches):
            cache(change)
        for listener in list(self._listeners):
            listener(change)
