"""The one notifier: wakes whatever waits for a stream to move.

Lower layers announce only `(stream, position)` and which rooms and users the
change concerns; readers (long-poll /sync, WebSocket connections, the
federation sender) wake and pull what lies between two positions from
storage. The in-process notifier below is what a Redis pub/sub channel would
feed in a multi-process layout: the messages are plain data.
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
        # In the order added: caches registered at start (the user-rooms cache) are told
        # of a change before any waiting reader wakes and reads them.
        self._listeners: dict[Listener, None] = {}
        self.positions: dict[str, int] = {}

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` on every change; returns the function that removes it."""
        self._listeners[listener] = None
        return lambda: self._listeners.pop(listener, None)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling `listener`; nothing happens if it is not registered."""
        self._listeners.pop(listener, None)

    def notify(
        self, stream: str, position: int, rooms: Iterable[str] = (), users: Iterable[str] = ()
    ) -> None:
        if position > self.positions.get(stream, 0):
            self.positions[stream] = position
        change = StreamChange(stream, position, frozenset(rooms), frozenset(users))
        for listener in list(self._listeners):
            listener(change)
