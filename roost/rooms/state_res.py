"""State resolution: algorithm v2 (room versions 2-11) and v2.1 (room version 12);
``resolve_state`` hands room version 1 to ``state_res_v1``.

The functions are named after the definitions and numbered steps of the spec
(rooms/v2 "State resolution", rooms/v12 "State resolution"), so each step can be
tested on its own:

* :func:`separate_conflicted` - unconflicted state map and conflicted state set.
* :func:`auth_difference`, :func:`conflicted_state_subgraph` (v2.1) and
  :func:`full_conflicted_set`.
* :func:`power_event_graph` and :func:`reverse_topological_power_ordering`
  (step 1), built on :func:`kahn_sort`.
* :func:`iterative_auth_checks` (steps 2 and 4).
* :func:`mainline`, :func:`mainline_position` and :func:`mainline_ordering` (step 3).
* :func:`apply_unconflicted` (step 5).

:func:`resolve_state` runs them in order. The core does no I/O of its own: events
and auth chain differences come from a :class:`StateResStore`, so the same code
serves the database-backed store and :class:`InMemoryStateResStore`. It is async
only because the store may have to hit the database; a :class:`Clock` lets long
resolutions hand control back to the reactor now and then.

Where the spec leaves room for interpretation we do what Synapse and Ruma do, since
state resolution is only useful if every server reaches the same answer:

* ``m.room.create`` counts as a power event, and power events need the empty
  state key (``m.room.power_levels`` and ``m.room.join_rules``).
* Step 1 follows auth events only through events of the full conflicted set.
* The full auth chain of a state set includes the state events themselves, so an
  unconflicted event never lands in the auth difference.
* A create event's sender has power level 0 for the ordering (it has no auth events).
* Events the store cannot return are left out (logged), as are auth events it
  cannot return. A store should therefore not hand out events that were rejected
  against their own auth chain; the spec says they never take part.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Protocol

from roost.rooms.auth import AuthError, auth_types_for_event, check_auth_rules, get_power_level
from roost.rooms.events import Event
from roost.rooms.state_res_v1 import resolve_state_v1
from roost.rooms.versions import RoomVersion

logger = logging.getLogger(__name__)

StateKey = tuple[str, str]
StateMap = Mapping[StateKey, str]

CREATE_KEY: StateKey = ("m.room.create", "")
POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")
JOIN_RULES_KEY: StateKey = ("m.room.join_rules", "")

# Hand control back to the reactor after this many iterations of any loop, so a
# resolution over thousands of events does not stall every other request.
YIELD_EVERY = 100


class StateResStore(Protocol):
    """What state resolution needs from storage."""

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
        """Return the events the store has among ``event_ids``; unknown ids are omitted."""
        ...

    async def get_auth_chain_difference(self, room_id: str, state_sets: list[set[str]]) -> set[str]:
        """Return union minus intersection of the full auth chains of the state sets.

        A state set's full auth chain is its events plus all their auth ancestors.
        """
        ...


class Clock(Protocol):
    """The one thing we need from a clock: a way to yield to the reactor."""

    async def sleep(self, seconds: float) -> None: ...


class _NoClock:
    """A clock that never yields, for callers that have no reactor (tests, tools)."""

    async def sleep(self, seconds: float) -> None:
        return None


class _Yielder:
    """Counts loop iterations and sleeps(0) every :data:`YIELD_EVERY` of them."""

    def __init__(self, clock: Clock | None) -> None:
        self._clock = clock if clock is not None else _NoClock()
        self._count = 0

    async def tick(self) -> None:
        self._count += 1
        if self._count % YIELD_EVERY == 0:
            await self._clock.sleep(0)


class StateResError(ValueError):
    """The inputs cannot be resolved, e.g. an event belongs to another room."""


def create_event_id(room_id: str) -> str:
    """The create event's id in a v12 room, whose room id is that id with ``!`` for ``$``."""
    return "$" + room_id[1:]


class EventLoader:
    """Fetches events from the store once per resolution and checks their room.

    Every step looks events up through one loader so that each event is fetched at
    most once, in batches where the caller knows what it will need.
    """

    def __init__(self, store: StateResStore, room_id: str) -> None:
        self.room_id = room_id
        self._store = store
        self._events: dict[str, Event] = {}
        self._missing: set[str] = set()

    async def load(self, event_ids: Iterable[str]) -> None:
        """Fetch, in one call to the store, those of ``event_ids`` not yet known."""
        wanted = {e for e in event_ids if e not in self._events and e not in self._missing}
        if not wanted:
            return
        found = await self._store.get_events(wanted)
        for event_id in wanted:
            event = found.get(event_id)
            if event is None:
                logger.warning("state res in %s: event %s not found", self.room_id, event_id)
                self._missing.add(event_id)
                continue
            self._check_room(event)
            self._events[event_id] = event

    async def get(self, event_id: str) -> Event | None:
        """Return the event, fetching it if needed, or None if the store lacks it."""
        await self.load((event_id,))
        return self._events.get(event_id)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._events

    def __getitem__(self, event_id: str) -> Event:
        """An already loaded event; callers use this after :meth:`load`."""
        return self._events[event_id]

    def _check_room(self, event: Event) -> None:
        # Using an event of another room would let power granted there count here.
        if event.room_id != self.room_id:
            raise StateResError(
                f"event {event.event_id} is in room {event.room_id}, not {self.room_id}"
            )


# -- Definitions ------------------------------------------------------------------


def is_power_event(event: Event) -> bool:
    """Whether ``event`` is a power event: one that might take abilities away."""
    if (event.type, event.state_key) in (POWER_LEVELS_KEY, JOIN_RULES_KEY, CREATE_KEY):
        return True
    if event.type == "m.room.member" and event.state_key is not None:
        return event.membership in ("leave", "ban") and event.sender != event.state_key
    return False


def separate_conflicted(
    state_sets: Sequence[StateMap],
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Split the state sets into the unconflicted state map and the conflicted state set.

    A key is unconflicted only if every state set has it with the same event; a key
    missing from some set is conflicted. The conflicted state set is returned grouped
    by key, which is how the later steps and the tests want to look at it.
    """
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    keys = {key for state_set in state_sets for key in state_set}
    for key in keys:
        values = {state_set.get(key) for state_set in state_sets}
        if len(values) == 1 and None not in values:
            unconflicted[key] = next(iter(values))  # type: ignore[assignment]
        else:
            conflicted[key] = {v for v in values if v is not None}
    return unconflicted, conflicted


async def auth_difference(
    room_id: str, state_sets: Sequence[StateMap], store: StateResStore
) -> set[str]:
    """The auth difference: events in some, but not all, full auth chains of the sets."""
    if not state_sets:
        return set()
    return await store.get_auth_chain_difference(
        room_id, [set(state_set.values()) for state_set in state_sets]
    )


async def conflicted_state_subgraph(
    conflicted_ids: set[str], events: EventLoader, clock: Clock | None = None
) -> set[str]:
    """The v2.1 conflicted state subgraph: every event on an auth path between two
    conflicted events, endpoints included.

    Such an event is reachable from a conflicted event by following auth events,
    and can itself reach a conflicted event. We walk the auth graph backwards from
    the conflicted events, remembering who cites whom, then walk those citations
    forwards from the conflicted events; what both walks reach is the subgraph.
    """
    cited_by = await _walk_auth_ancestors(conflicted_ids, events, clock)
    subgraph = set(conflicted_ids)
    todo = list(conflicted_ids)
    while todo:
        for citer in cited_by.get(todo.pop(), ()):
            if citer not in subgraph:
                subgraph.add(citer)
                todo.append(citer)
    return subgraph


async def _walk_auth_ancestors(
    start: set[str], events: EventLoader, clock: Clock | None
) -> dict[str, set[str]]:
    """Walk the auth chains of ``start`` one generation per store call.

    Returns, for every auth event met, the set of walked events that cite it.
    """
    yielder = _Yielder(clock)
    cited_by: dict[str, set[str]] = {}
    seen = set(start)
    frontier = set(start)
    while frontier:
        await events.load(frontier)
        next_frontier: set[str] = set()
        for event_id in frontier:
            if event_id not in events:
                continue
            for auth_id in events[event_id].auth_event_ids:
                cited_by.setdefault(auth_id, set()).add(event_id)
                if auth_id not in seen:
                    seen.add(auth_id)
                    next_frontier.add(auth_id)
            await yielder.tick()
        frontier = next_frontier
    return cited_by


async def full_conflicted_set(
    version: RoomVersion,
    state_sets: Sequence[StateMap],
    conflicted_ids: set[str],
    store: StateResStore,
    events: EventLoader,
    clock: Clock | None = None,
) -> set[str]:
    """The full conflicted set: conflicted state set, auth difference, and in v2.1
    the conflicted state subgraph. Events the store does not have are left out."""
    full = set(conflicted_ids)
    full |= await auth_difference(events.room_id, state_sets, store)
    if version.state_res_v2_1:
        full |= await conflicted_state_subgraph(conflicted_ids, events, clock)
    await events.load(full)
    return {event_id for event_id in full if event_id in events}


# -- Step 1: reverse topological power ordering -------------------------------------


async def power_event_graph(full_set: set[str], events: EventLoader) -> dict[str, set[str]]:
    """The set X of step 1 as a graph: each event mapped to its auth events within X.

    X is the power events of the full conflicted set plus what of their auth chains
    lies in the full conflicted set, reached through events of that set only.
    """
    await events.load(full_set)
    graph: dict[str, set[str]] = {}
    todo = [e for e in full_set if e in events and is_power_event(events[e])]
    while todo:
        event_id = todo.pop()
        if event_id in graph:
            continue
        edges = {a for a in events[event_id].auth_event_ids if a in full_set and a in events}
        graph[event_id] = edges
        todo.extend(a for a in edges if a not in graph)
    return graph


def kahn_sort(graph: Mapping[str, set[str]], key: Callable[[str], Hashable]) -> list[str]:
    """Topologically sort ``graph`` (event -> the events it points at), pointed-at first.

    Kahn's algorithm; among the events that are ready, the one with the smallest
    ``key`` goes next, which yields the lexicographically smallest ordering.
    """
    waiting_on = {node: set(edges) for node, edges in graph.items()}
    dependants: dict[str, set[str]] = {node: set() for node in graph}
    for node, edges in graph.items():
        for edge in edges:
            dependants.setdefault(edge, set()).add(node)
            waiting_on.setdefault(edge, set())
    ready = [(key(node), node) for node, edges in waiting_on.items() if not edges]
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        _, node = heapq.heappop(ready)
        ordered.append(node)
        for dependant in dependants[node]:
            waiting_on[dependant].discard(node)
            if not waiting_on[dependant]:
                heapq.heappush(ready, (key(dependant), dependant))
    if len(ordered) != len(waiting_on):
        raise StateResError("auth events form a cycle")
    return ordered


async def sender_power_level(event: Event, events: EventLoader, version: RoomVersion) -> float:
    """The sender's power level according to the event's own auth events.

    In v12 the create event is not among the auth events but decides who the
    creators are (infinitely powerful), so it is taken from the room id.
    """
    if event.type == "m.room.create":
        return 0
    await events.load(event.auth_event_ids)
    auth_events = _keyed(events, event.auth_event_ids)
    if version.hydra:
        create = await events.get(create_event_id(events.room_id))
        if create is not None:
            auth_events[CREATE_KEY] = create
    return get_power_level(event.sender, auth_events, version)


async def reverse_topological_power_ordering(
    graph: Mapping[str, set[str]],
    events: EventLoader,
    version: RoomVersion,
    clock: Clock | None = None,
) -> list[str]:
    """Sort the events of ``graph`` earliest first: auth events before the events
    citing them, ties broken by sender power (highest first), then
    origin_server_ts, then event id."""
    yielder = _Yielder(clock)
    await events.load(graph)
    order: dict[str, tuple[float, int, str]] = {}
    for event_id in graph:
        event = events[event_id]
        power = await sender_power_level(event, events, version)
        order[event_id] = (-power, event.origin_server_ts, event_id)
        await yielder.tick()
    return kahn_sort(graph, order.__getitem__)


# -- Steps 2 and 4: iterative auth checks -------------------------------------------


def _keyed(events: EventLoader, event_ids: Iterable[str]) -> dict[StateKey, Event]:
    """Map loaded state events by (type, state_key); unknown ids are skipped."""
    keyed: dict[StateKey, Event] = {}
    for event_id in event_ids:
        if event_id in events:
            event = events[event_id]
            if event.state_key is not None:
                keyed[(event.type, event.state_key)] = event
    return keyed


async def auth_events_for_check(
    event: Event, state: StateMap, events: EventLoader, version: RoomVersion
) -> dict[StateKey, Event]:
    """The auth events to check ``event`` with during iterative auth checks.

    Each key the auth rules need comes from the state being built; a key missing
    there comes from the event's own auth events. In v12 the room's create event is
    always supplied, since it is implied by the room id rather than cited.
    """
    own = _keyed(events, event.auth_event_ids)
    needed = auth_types_for_event(event.type, event.sender, event.state_key, event.content, version)
    await events.load(state[key] for key in needed if key in state)
    auth_events: dict[StateKey, Event] = {}
    for key in needed:
        if key in state and state[key] in events:
            auth_events[key] = events[state[key]]
        elif key in own:
            auth_events[key] = own[key]
    if version.hydra:
        create = await events.get(create_event_id(events.room_id))
        if create is not None:
            auth_events[CREATE_KEY] = create
    return auth_events


async def iterative_auth_checks(
    version: RoomVersion,
    event_ids: Sequence[str],
    base_state: StateMap,
    events: EventLoader,
    clock: Clock | None = None,
) -> dict[StateKey, str]:
    """Apply, in order, each event that the auth rules allow against the state so far."""
    yielder = _Yielder(clock)
    state = dict(base_state)
    await events.load(event_ids)
    await events.load(a for e in event_ids if e in events for a in events[e].auth_event_ids)
    for event_id in event_ids:
        await yielder.tick()
        event = events[event_id] if event_id in events else None
        if event is None or event.state_key is None:
            continue
        auth_events = await auth_events_for_check(event, state, events, version)
        try:
            check_auth_rules(version, event, auth_events)
        except AuthError as e:
            logger.debug("state res: %s not allowed: %s", event_id, e.reason)
            continue
        state[(event.type, event.state_key)] = event_id
    return state


# -- Step 3: mainline ordering ------------------------------------------------------


async def _cited_power_levels(event: Event, events: EventLoader) -> str | None:
    """The ``m.room.power_levels`` event among the event's auth events, if any."""
    await events.load(event.auth_event_ids)
    for auth_id in event.auth_event_ids:
        if auth_id in events and (events[auth_id].type, events[auth_id].state_key) == (
            POWER_LEVELS_KEY
        ):
            return auth_id
    return None


async def mainline(power_levels_id: str | None, events: EventLoader) -> list[str]:
    """The mainline [P0, P1, ..., Pn] of a power levels event: it, then the power
    levels event each one cites. Empty if there is no power levels event."""
    line: list[str] = []
    current = power_levels_id
    while current is not None and current not in line:
        event = await events.get(current)
        if event is None:
            break
        line.append(current)
        current = await _cited_power_levels(event, events)
    return line


async def mainline_position(
    event: Event, positions: Mapping[str, int], events: EventLoader
) -> float:
    """Index i of the first Pi reached by following cited power levels from ``event``
    (not counting the event itself), or infinity if the chain never meets it."""
    seen: set[str] = set()
    current = await _cited_power_levels(event, events)
    while current is not None and current not in seen:
        if current in positions:
            return positions[current]
        seen.add(current)
        cited = await events.get(current)
        current = None if cited is None else await _cited_power_levels(cited, events)
    return math.inf


async def mainline_ordering(
    event_ids: Iterable[str],
    power_levels_id: str | None,
    events: EventLoader,
    clock: Clock | None = None,
) -> list[str]:
    """Sort events by mainline ordering based on ``power_levels_id``: those based on
    an earlier mainline event first, then by origin_server_ts, then event id."""
    yielder = _Yielder(clock)
    positions = {pl: i for i, pl in enumerate(await mainline(power_levels_id, events))}
    order: dict[str, tuple[float, int, str]] = {}
    for event_id in event_ids:
        event = await events.get(event_id)
        if event is None:
            continue
        position = await mainline_position(event, positions, events)
        order[event_id] = (-position, event.origin_server_ts, event_id)
        await yielder.tick()
    return sorted(order, key=order.__getitem__)


# -- Step 5 and the whole algorithm -------------------------------------------------


def apply_unconflicted(
    resolved: Mapping[StateKey, str], unconflicted: Mapping[StateKey, str]
) -> dict[StateKey, str]:
    """Step 5: the unconflicted state map always wins over what the checks produced."""
    final = dict(resolved)
    final.update(unconflicted)
    return final


async def resolve_state(
    room_id: str,
    version: RoomVersion,
    state_sets: Sequence[StateMap],
    store: StateResStore,
    clock: Clock | None = None,
) -> dict[StateKey, str]:
    """Resolve ``state_sets`` into one state map, per the room version's algorithm."""
    if version.state_res_v1:
        return await resolve_state_v1(room_id, version, state_sets, store)
    unconflicted, conflicted = separate_conflicted(state_sets)
    if not conflicted:
        return unconflicted
    events = EventLoader(store, room_id)
    conflicted_ids = set().union(*conflicted.values())
    full = await full_conflicted_set(version, state_sets, conflicted_ids, store, events, clock)

    graph = await power_event_graph(full, events)
    power_order = await reverse_topological_power_ordering(graph, events, version, clock)
    # v2.1 starts from nothing, so every event is checked against what its own auth
    # events or the already resolved power events say, never against state that
    # merely happens to agree across (possibly bogus) forks.
    base_state = {} if version.state_res_v2_1 else unconflicted
    partial = await iterative_auth_checks(version, power_order, base_state, events, clock)

    leftover = full - set(power_order)
    ordered = await mainline_ordering(leftover, partial.get(POWER_LEVELS_KEY), events, clock)
    resolved = await iterative_auth_checks(version, ordered, partial, events, clock)
    return apply_unconflicted(resolved, unconflicted)


# -- A store over a dict ------------------------------------------------------------


class InMemoryStateResStore:
    """A :class:`StateResStore` over events held in memory, for tests and small uses."""

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self._events: dict[str, Event] = {}
        for event in events:
            self.add(event)

    def add(self, event: Event) -> None:
        """Make ``event`` known to the store."""
        self._events[event.event_id] = event

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
        return {e: self._events[e] for e in event_ids if e in self._events}

    async def get_auth_chain_difference(self, room_id: str, state_sets: list[set[str]]) -> set[str]:
        if not state_sets:
            return set()
        chains = [self.full_auth_chain(state_set) for state_set in state_sets]
        return set.union(*chains) - set.intersection(*chains)

    def full_auth_chain(self, event_ids: Iterable[str]) -> set[str]:
        """``event_ids`` and everything reachable from them through auth events."""
        return walk_auth_chain(event_ids, self._events)


def walk_auth_chain(event_ids: Iterable[str], events: Mapping[str, Event]) -> set[str]:
    """``event_ids`` and every auth ancestor reachable through the events in ``events``.

    Ids whose events are not in ``events`` are included but not walked further:
    a caller holding the rest elsewhere (the database) continues from those.
    """
    chain = set(event_ids)
    todo = list(chain)
    while todo:
        event = events.get(todo.pop())
        if event is None:
            continue
        for auth_id in event.auth_event_ids:
            if auth_id not in chain:
                chain.add(auth_id)
                todo.append(auth_id)
    return chain
