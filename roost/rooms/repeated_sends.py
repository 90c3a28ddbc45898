"""Answering sends whose transaction id was already used, found when their batch commits.

Senders do not look their txn id up before sending (that was a round trip per
message): a retry the client layer no longer remembers (say, after a restart)
is caught by the txn table's key when the batch that carries it is committed
(storage raises TxnIdConflict and undoes the whole batch). The room engine
(engine.py) hands the batch's units here and puts back at the front of the
room's queue whatever this leaves unanswered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from roost.rooms.append_queue import Unit, as_room_error, fail, succeed
from roost.rooms.engine_types import LoadedEvent, RoomError
from roost.storage.events import EventStore

GetEvents = Callable[[list[str]], Awaitable[dict[str, LoadedEvent]]]


async def settle(events: EventStore, get_events: GetEvents, units: list[Unit]) -> list[Unit]:
    """Answer the units whose txn ids were stored with the events they made then; return
    the others, to be queued again, as often as it takes: a send never fails because
    someone else retried. Each round answers at least one send, and a round that
    answers none (one txn id twice in the batch) marks each of the rest `alone`, where
    only its own txn id can conflict."""
    keys = [n.txn_key for unit in units for n in unit.events if n.txn_key is not None]
    try:
        stored = await events.txn_events(keys)
        loaded = await get_events(list(stored.values()))
    except Exception as e:
        for unit in units:
            fail(unit.result, as_room_error(e))
        return []
    again: list[Unit] = []
    for unit in units:
        found = [loaded[stored[n.txn_key]].event for n in unit.events
                 if n.txn_key in stored and stored[n.txn_key] in loaded]
        if found and len(found) == len(unit.events):
            succeed(unit.result, found)
        elif unit.alone:
            # Alone, its own txn id conflicted and yet is not stored: a repeat of a
            # send of the same batch (answered above), or a concurrent writer.
            fail(unit.result, RoomError(409, "M_UNKNOWN", "transaction id already used"))
        else:
            again.append(unit)
    if len(again) == len(units):
        for unit in again:
            unit.alone = True
    return again
