"""History visibility: may a user see an event? (Spec: "History visibility".)

Pure rules over two histories the caller reads once per request: the room's
history_visibility setting and the user's membership, each as a list of
(stream position, value) in order. A state value "at" an event is the last
change at or before it, so a user's own join event is visible to them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

History = Sequence[tuple[int, str]]


def value_at(history: History, position: int, default: str | None) -> str | None:
    """The value in force at `position` (changes at that position included)."""
    index = bisect_right([p for p, _ in history], position)
    return history[index - 1][1] if index else default


def joined_after(memberships: History, position: int) -> bool:
    return any(p > position and m == "join" for p, m in memberships)


def can_see_event(visibilities: History, memberships: History, position: int) -> bool:
    """The spec's algorithm, steps in its order; the default visibility is `shared`."""
    visibility = value_at(visibilities, position, "shared")
    if visibility == "world_readable":
        return True
    membership = value_at(memberships, position, None)
    if membership == "join":
        return True
    if visibility == "shared" and (joined_after(memberships, position)
                                   or value_at(memberships, 1 << 62, None) == "join"):
        return True
    return visibility == "invited" and membership == "invite"
