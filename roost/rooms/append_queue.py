"""What a room's append queue holds, and how the callers waiting on it are answered.

The engine (engine.py) keeps one queue per room and drains it in batches; these
are its items (a unit of events that land together, or a job run alone) and the
helpers that resolve a caller's wait, whatever went wrong.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from roost.rooms.engine_types import NewEvent, RoomError
from roost.rooms.events import Event
from roost.rooms.hashing import CanonicalJSONError
from roost.rooms.versions import RoomVersion

logger = logging.getLogger("roost.rooms.engine")


@dataclass
class Unit:
    events: list[NewEvent]
    result: defer.Deferred[list[Event]]
    new_room: RoomVersion | None = None  # set for the unit that creates the room
    prebuilt_create: Event | None = None  # a v12 create event, built before the room id is known
    # Remote events: a coroutine function run alone on the queue (see ingest_remote).
    job: Any = None
    # Put back on the queue after a batch undone by someone's repeated txn id, with no
    # progress made: it then goes alone, so only its own txn id can conflict.
    alone: bool = False


@dataclass
class Queue:
    pending: list[Unit] = field(default_factory=list)
    running: bool = False


def as_room_error(error: Exception) -> RoomError:
    """A refusal the client can read: bad JSON stays a 400, anything unexpected is a 500."""
    if isinstance(error, RoomError):
        return error
    if isinstance(error, CanonicalJSONError):
        return RoomError(400, "M_BAD_JSON", str(error))
    logger.error("building an event failed", exc_info=error)
    return RoomError(500, "M_UNKNOWN", "Internal error while building the event")


def succeed(d: defer.Deferred[list[Event]], built: list[Event]) -> None:
    """Resolve a caller's wait, unless the caller went away (its Deferred was cancelled)."""
    if not d.called:
        d.callback(built)


def fail(d: defer.Deferred[list[Event]], error: Exception) -> None:
    if not d.called:
        d.errback(error)
