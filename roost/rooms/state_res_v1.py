"""State resolution for room version 1 (spec: rooms/v1, "State resolution").

Version 1's algorithm, kept apart from v2 (``state_res``) because it shares
nothing with it but the idea of conflicted state:

* R starts as the state keys all the sets agree on (the unconflicted state).
* Conflicted ``m.room.power_levels``, then ``m.room.join_rules``, then
  ``m.room.member`` events are resolved in turn by :func:`resolve_auth_events`:
  sorted by ascending depth then descending sha1(event_id), the first is taken
  and each next one replaces it for as long as the auth rules allow it in R;
  R then includes the winners.
* Every other conflicted key takes the event with the highest depth (lowest
  sha1(event_id) on a tie) that the auth rules allow in R
  (:func:`resolve_normal_events`); if none is allowed, the last one tried.

The auth checks read R only for the keys the candidate's auth rules need
(``auth_types_for_event``), as the other servers speaking v1 do; events the
store cannot return are left out, as in v2.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from roost.rooms.auth import AuthError, auth_types_for_event, check_auth_rules
from roost.rooms.events import Event
from roost.rooms.versions import RoomVersion

__all__ = ["ordered_events", "resolve_auth_events", "resolve_normal_events", "resolve_state_v1"]

logger = logging.getLogger(__name__)

StateKey = tuple[str, str]
StateMap = Mapping[StateKey, str]

POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")


class EventSource(Protocol):
    """The one thing v1 resolution needs from storage."""

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]: ...


class StateResV1Error(ValueError):
    """An event given for resolution belongs to another room."""


def separate(state_sets: Sequence[StateMap]) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """The unconflicted state (one event id everywhere it appears) and the conflicted keys.

    A key missing from some sets but the same in all others is unconflicted, as
    the v1 spec only calls events with *different* ids for one key conflicting.
    """
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    for state in state_sets:
        for key, event_id in state.items():
            if key in conflicted:
                conflicted[key].add(event_id)
            elif key in unconflicted and unconflicted[key] != event_id:
                conflicted[key] = {unconflicted.pop(key), event_id}
            else:
                unconflicted[key] = event_id
    return unconflicted, conflicted


def _sha1(event_id: str) -> str:
    return hashlib.sha1(event_id.encode("utf-8")).hexdigest()


def ordered_events(events: Iterable[Event]) -> list[Event]:
    """Highest depth first, then lowest sha1(event_id): the order "other" conflicts use."""
    return sorted(events, key=lambda e: (-e.depth, _sha1(e.event_id)))


def _allowed(version: RoomVersion, event: Event, resolved: Mapping[StateKey, Event]) -> bool:
    """Whether the auth rules allow ``event`` in the state ``resolved``."""
    needed = auth_types_for_event(event.type, event.sender, event.state_key, event.content, version)
    auth_events = {key: resolved[key] for key in needed if key in resolved}
    try:
        check_auth_rules(version, event, auth_events)
    except AuthError as e:
        logger.debug("v1 state res: %s not allowed: %s", event.event_id, e.reason)
        return False
    return True


def resolve_auth_events(
    version: RoomVersion, events: Sequence[Event], resolved: Mapping[StateKey, Event]
) -> Event:
    """One conflicted power levels, join rules or member key.

    Ascending depth then descending sha1(event_id): the first event is taken,
    and each next one replaces it while the auth rules allow it in R with the
    current choice applied; the first refusal ends the walk.
    """
    ascending = list(reversed(ordered_events(events)))
    state = dict(resolved)
    chosen = ascending[0]
    for event in ascending[1:]:
        state[(chosen.type, chosen.state_key or "")] = chosen
        if not _allowed(version, event, state):
            break
        chosen = event
    return chosen


def resolve_normal_events(
    version: RoomVersion, events: Sequence[Event], resolved: Mapping[StateKey, Event]
) -> Event:
    """Any other conflicted key: the first allowed of highest depth, lowest sha1."""
    ordered = ordered_events(events)
    for event in ordered:
        if _allowed(version, event, resolved):
            return event
    return ordered[-1]


async def resolve_state_v1(
    room_id: str, version: RoomVersion, state_sets: Sequence[StateMap], store: EventSource
) -> dict[StateKey, str]:
    """Resolve ``state_sets`` (each (type, state_key) -> event id) the v1 way."""
    if len(state_sets) == 1:
        return dict(state_sets[0])
    unconflicted, conflicted = separate(state_sets)
    if not conflicted:
        return unconflicted
    wanted = {e for ids in conflicted.values() for e in ids}
    found = await store.get_events(wanted)
    _check_rooms(room_id, found.values())
    candidates: dict[StateKey, list[Event]] = {}
    for key, ids in conflicted.items():
        present = [found[e] for e in ids if e in found]
        if len(present) == 1:
            unconflicted[key] = present[0].event_id
        elif present:
            candidates[key] = present
    # R's events, for the keys the candidates' auth rules read.
    needed = {
        key for events in candidates.values() for event in events
        for key in auth_types_for_event(event.type, event.sender, event.state_key,
                                        event.content, version)
        if key in unconflicted
    }
    auth_found = await store.get_events(unconflicted[key] for key in needed)
    _check_rooms(room_id, auth_found.values())
    resolved: dict[StateKey, Event] = {
        key: auth_found[unconflicted[key]] for key in needed if unconflicted[key] in auth_found
    }
    winners: dict[StateKey, Event] = {}
    if POWER_LEVELS_KEY in candidates:
        winners[POWER_LEVELS_KEY] = resolve_auth_events(
            version, candidates[POWER_LEVELS_KEY], resolved)
    resolved.update(winners)
    for event_type in ("m.room.join_rules", "m.room.member"):
        for key, events in candidates.items():
            if key[0] == event_type:
                winners[key] = resolve_auth_events(version, events, resolved)
        resolved.update(winners)
    for key, events in candidates.items():
        if key not in winners:
            winners[key] = resolve_normal_events(version, events, resolved)
    final = dict(unconflicted)
    final.update({key: event.event_id for key, event in winners.items()})
    return final


def _check_rooms(room_id: str, events: Iterable[Event]) -> None:
    for event in events:
        if event.room_id != room_id:
            raise StateResV1Error(f"event {event.event_id} is in {event.room_id}, not {room_id}")
