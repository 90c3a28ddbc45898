"""Who may see what: the pure rules behind roost.rooms.access (spec: "History visibility").

Pure functions over what the reader (rooms/access.py) loads once per request:
the room's history_visibility setting and a user's membership, each as a list
of (stream position, value) in order. A state value "at" an event is the last
change at or before it, so a user's own join event is visible to them.

Three questions, one answer each, for users and for servers:
- may this user see this event (`can_see_event`), and this server
  (`server_can_see_event`: one of its users could);
- what of a room's data may this user read at all (`room_read`): the current
  state, the state as it was when they left, or nothing.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

History = Sequence[tuple[int, str]]

# What an endpoint reads, for `room_read`.
EVENTS = "events"  # /messages, /context, /event, /relations, /threads, /search: filtered per event
STATE = "state"  # /state, /state/{type}/{key}, /members
JOINED = "joined"  # /joined_members, /aliases: only for members now (or a world-readable room)

# What `room_read` grants.
CURRENT = "current"  # the room as it is now
AT_DEPARTURE = "at_departure"  # the room as it was when the user left or was banned


def value_at(history: History, position: int, default: str | None) -> str | None:
    """The value in force at `position` (changes at that position included)."""
    index = bisect_right([p for p, _ in history], position)
    return history[index - 1][1] if index else default


def joined_after(memberships: History, position: int) -> bool:
    return any(p > position and m == "join" for p, m in memberships)


def can_see_event(visibilities: History, memberships: History, position: int) -> bool:
    """The spec's algorithm, steps in its order; the default visibility is `shared`.

    `memberships` is empty for a user who never was in the room or who forgot
    it: they see world-readable history only.
    """
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


class Visibility:
    """`can_see_event` for one reader over many events (a page of history): the two
    histories are indexed once, not per event. Same answers, by the same steps."""

    def __init__(self, visibilities: History, memberships: History) -> None:
        self._visibilities = visibilities
        self._memberships = memberships
        self._visibility_positions = [p for p, _ in visibilities]
        self._membership_positions = [p for p, _ in memberships]
        self._joined_now = bool(memberships) and memberships[-1][1] == "join"
        joins = [p for p, m in memberships if m == "join"]
        self._last_join = joins[-1] if joins else None
        # Joined from this position on, without a break, until now (None: not joined now).
        self.joined_since = memberships[-1][0] if self._joined_now else None

    def membership_at(self, position: int) -> str | None:
        index = bisect_right(self._membership_positions, position)
        return self._memberships[index - 1][1] if index else None

    def can_see(self, position: int) -> bool:
        index = bisect_right(self._visibility_positions, position)
        visibility = self._visibilities[index - 1][1] if index else "shared"
        if visibility == "world_readable":
            return True
        membership = self.membership_at(position)
        if membership == "join":
            return True
        if visibility == "shared" and (self._joined_now or (
                self._last_join is not None and self._last_join > position)):
            return True
        return visibility == "invited" and membership == "invite"


def server_can_see_event(visibilities: History, members: Iterable[History], position: int) -> bool:
    """An event goes to a server only if one of its users could see it (`members` holds
    the membership history of each of that server's users who ever had one)."""
    if value_at(visibilities, position, "shared") == "world_readable":
        return True
    return any(can_see_event(visibilities, history, position) for history in members)


@dataclass(frozen=True)
class Standing:
    """A user's relation to a room now, as `room_read` needs it."""

    membership: str | None  # current membership, None if never had one
    ever_joined: bool
    forgotten: bool
    world_readable: bool  # the room's history visibility now


def room_read(standing: Standing, kind: str) -> str | None:
    """What of the room this user may read through an endpoint of `kind`, or None.

    Joined members read the room now. A world-readable room is readable by
    anyone. A member who joined and then left or was banned (and has not
    forgotten the room) reads it as it was when they left: the events they
    could see, the state at their departure. Invited users, users who never
    joined, and users who forgot the room read nothing more.
    """
    if standing.membership == "join" or standing.world_readable:
        return CURRENT
    departed = (standing.membership in ("leave", "ban") and standing.ever_joined
                and not standing.forgotten)
    if departed and kind in (EVENTS, STATE):
        return AT_DEPARTURE
    return None
