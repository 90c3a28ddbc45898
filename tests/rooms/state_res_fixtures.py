"""Small room event graphs for the state resolution tests.

Events are real :class:`roost.rooms.events.Event` objects built from PDUs, so
their ids are reference hashes; tests refer to them by short names ("IMA",
"PA", ...) through :class:`RoomGraph`. The same scenario builds for v10, v11 and
v12: the builder adds the create event to auth events where the room version
cites it, names the creator in ``m.room.power_levels`` only where creators are
not implicitly all-powerful, and derives the v12 room id from the create event.

Naming follows the usual state res test convention: I* events are the shared
start of the room (IMA = initial membership of Alice), P* are power levels, M*
memberships, T* topics, JR* join rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from roost.rooms.events import Event
from roost.rooms.hashing import add_content_hash
from roost.rooms.state_res import EventLoader, InMemoryStateResStore, StateKey
from roost.rooms.versions import RoomVersion

SERVER = "example.com"
ALICE = f"@alice:{SERVER}"
BOB = f"@bob:{SERVER}"
CHARLIE = f"@charlie:{SERVER}"
EVELYN = f"@evelyn:{SERVER}"
ZARA = f"@zara:{SERVER}"

# Every event gets a distinct timestamp unless a test asks otherwise, so orderings
# never depend on the (hash-derived) event ids by accident.
TS_STEP = 1000


def power_levels_content(users: Mapping[str, int], **overrides: Any) -> dict[str, Any]:
    """Power levels with the spec defaults spelled out (ban/kick/state_default 50)."""
    content: dict[str, Any] = {
        "users": dict(users),
        "users_default": 0,
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "events": {},
    }
    content.update(overrides)
    return content


@dataclass
class RoomGraph:
    """Builds one room's events by short name."""

    version: RoomVersion
    creator: str = ALICE
    additional_creators: Sequence[str] = ()
    events: dict[str, Event] = field(default_factory=dict)
    room_id: str = ""
    _names: dict[str, str] = field(default_factory=dict)
    _count: int = 0
    _last: str | None = None

    def __post_init__(self) -> None:
        content: dict[str, Any] = {"room_version": self.version.identifier}
        if not self.version.updated_redaction_rules:
            content["creator"] = self.creator
        if self.additional_creators:
            content["additional_creators"] = list(self.additional_creators)
        if not self.version.hydra and not self.room_id:
            self.room_id = f"!room:{SERVER}"
        self.add("CREATE", "m.room.create", self.creator, content, state_key="")
        if self.version.hydra:
            self.room_id = "!" + self.id("CREATE")[1:]

    # -- building -------------------------------------------------------------

    def add(
        self,
        name: str,
        type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        auth: Iterable[str] = (),
        ts: int | None = None,
        depth: int | None = None,
    ) -> Event:
        """Add an event citing the named ``auth`` events (plus create where cited).

        In v1/v2 rooms the event id is ``$NAME:example.com`` and the references
        are [id, hashes] pairs, as the room version's format has them.
        """
        assert name not in self.events, name
        self._count += 1
        auth_ids = [self.id(a) for a in auth]
        if type != "m.room.create" and self.version.create_event_in_auth_events:
            auth_ids.insert(0, self.id("CREATE"))
        prev_ids = [self.id(self._last)] if self._last else []
        if self.version.reference_pairs:
            prev_ids = [[e, {}] for e in prev_ids]  # type: ignore[misc]
            auth_ids = [[e, {}] for e in auth_ids]  # type: ignore[misc]
        pdu: dict[str, Any] = {
            "type": type,
            "sender": sender,
            "content": dict(content),
            "prev_events": prev_ids,
            "auth_events": auth_ids,
            "depth": self._count if depth is None else depth,
            "origin_server_ts": self._count * TS_STEP if ts is None else ts,
            "signatures": {},
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        if self.room_id:
            pdu["room_id"] = self.room_id
        if self.version.event_id_in_pdu:
            pdu["event_id"] = f"${name}:{SERVER}"
        event = Event.from_pdu(add_content_hash(pdu), self.version)
        self.events[name] = event
        self._names[event.event_id] = name
        self._last = name
        return event

    def member(
        self,
        name: str,
        target: str,
        membership: str,
        *,
        sender: str | None = None,
        auth: Iterable[str] = (),
        ts: int | None = None,
        **extra: Any,
    ) -> Event:
        content = {"membership": membership, **extra}
        return self.add(
            name, "m.room.member", sender or target, content, state_key=target, auth=auth, ts=ts
        )

    def power_levels(
        self,
        name: str,
        users: Mapping[str, int],
        *,
        sender: str = ALICE,
        auth: Iterable[str] = (),
        ts: int | None = None,
    ) -> Event:
        """Power levels; the creator gets 100 where creators are not implicitly infinite
        (v12 forbids listing creators at all)."""
        users = dict(users)
        if not self.version.hydra:
            users.setdefault(self.creator, 100)
        return self.add(
            name,
            "m.room.power_levels",
            sender,
            power_levels_content(users),
            state_key="",
            auth=auth,
            ts=ts,
        )

    def join_rules(
        self, name: str, rule: str, *, sender: str = ALICE, auth: Iterable[str] = (), **kw: Any
    ) -> Event:
        return self.add(
            name, "m.room.join_rules", sender, {"join_rule": rule}, state_key="", auth=auth, **kw
        )

    def topic(
        self, name: str, text: str, *, sender: str = ALICE, auth: Iterable[str] = (), **kw: Any
    ) -> Event:
        return self.add(
            name, "m.room.topic", sender, {"topic": text}, state_key="", auth=auth, **kw
        )

    # -- looking up -----------------------------------------------------------

    def id(self, name: str) -> str:
        return self.events[name].event_id

    def ids(self, *names: str) -> set[str]:
        return {self.id(n) for n in names}

    def name(self, event_id: str) -> str:
        return self._names.get(event_id, event_id)

    def names(self, event_ids: Iterable[str]) -> set[str]:
        return {self.name(e) for e in event_ids}

    def ordered_names(self, event_ids: Iterable[str]) -> list[str]:
        return [self.name(e) for e in event_ids]

    def state(self, *names: str) -> dict[StateKey, str]:
        """The state map made of the named state events."""
        state: dict[StateKey, str] = {}
        for n in names:
            event = self.events[n]
            assert event.state_key is not None, n
            state[(event.type, event.state_key)] = event.event_id
        return state

    def named_state(self, state: Mapping[StateKey, str]) -> dict[StateKey, str]:
        """``state`` with event ids replaced by names, for readable assertions."""
        return {key: self.name(event_id) for key, event_id in state.items()}

    def store(self) -> InMemoryStateResStore:
        return InMemoryStateResStore(self.events.values())

    def loader(self) -> EventLoader:
        return EventLoader(self.store(), self.room_id)


def base_room(version: RoomVersion, **graph_args: Any) -> RoomGraph:
    """Alice creates a public room; Bob and Charlie join. Alice alone has power."""
    g = RoomGraph(version, **graph_args)
    g.member("IMA", ALICE, "join")
    g.power_levels("IPOWER", {}, auth=["IMA"])
    g.join_rules("IJR", "public", auth=["IMA", "IPOWER"])
    g.member("IMB", BOB, "join", auth=["IJR", "IPOWER"])
    g.member("IMC", CHARLIE, "join", auth=["IJR", "IPOWER"])
    return g


BASE = ("CREATE", "IMA", "IPOWER", "IJR", "IMB", "IMC")


@dataclass
class Scenario:
    """A graph, the state sets to resolve, and the expected resolution by name."""

    graph: RoomGraph
    state_sets: list[dict[StateKey, str]]
    expected: dict[StateKey, str]


def _state_with(g: RoomGraph, base: Iterable[str], *names: str) -> dict[StateKey, str]:
    """``base`` state with the named events laid over it, in order."""
    state = g.state(*base)
    state.update(g.state(*names))
    return state


def ban_vs_power_levels(version: RoomVersion) -> Scenario:
    """Alice bans Bob while, concurrently, Bob (at 50) raises Charlie.

    Alice is more powerful, so her ban sorts first and Bob's power levels change
    then fails: Bob is no longer in the room.
    """
    g = base_room(version)
    g.power_levels("PA", {BOB: 50}, auth=["IMA", "IPOWER"])
    g.member("MB", BOB, "ban", sender=ALICE, auth=["IMA", "PA", "IMB"])
    g.power_levels("PB", {BOB: 50, CHARLIE: 50}, sender=BOB, auth=["IMB", "PA"])
    sets = [_state_with(g, BASE, "PA", "MB"), _state_with(g, BASE, "PB")]
    expected = g.named_state(_state_with(g, BASE, "PA", "MB"))
    return Scenario(g, sets, expected)


def topic_after_demotion(version: RoomVersion) -> Scenario:
    """Alice demotes Bob while, concurrently, Bob changes the topic.

    The topic is not a power event, so it is ordered by mainline after the
    resolved power levels; Bob then lacks the power and Alice's topic stays.
    """
    g = base_room(version)
    g.power_levels("PA", {BOB: 50}, auth=["IMA", "IPOWER"])
    g.topic("T1", "Alice's topic", auth=["IMA", "PA"])
    g.power_levels("PC", {BOB: 0}, auth=["IMA", "PA"])
    g.topic("T2", "Bob's topic", sender=BOB, auth=["IMB", "PA"])
    sets = [_state_with(g, BASE, "PC", "T1"), _state_with(g, BASE, "PA", "T2")]
    expected = g.named_state(_state_with(g, BASE, "PC", "T1"))
    return Scenario(g, sets, expected)


def join_rules_change(version: RoomVersion) -> Scenario:
    """Alice makes the room invite-only while, concurrently, Zara joins it."""
    g = base_room(version)
    g.join_rules("JR2", "invite", auth=["IMA", "IPOWER"])
    g.member("MZ", ZARA, "join", auth=["IJR", "IPOWER"])
    sets = [_state_with(g, BASE, "JR2"), _state_with(g, BASE, "MZ")]
    expected = g.named_state(_state_with(g, BASE, "JR2"))
    return Scenario(g, sets, expected)


def join_rules_reset(version: RoomVersion) -> Scenario:
    """Alice makes the room invite-only and leaves; a fork still shows it public.

    Both join rules events are conflicted; Alice's leave is not. Starting the
    checks from the unconflicted state (v2) finds Alice gone and rejects both
    join rules: the join rules vanish from the room. v2.1 starts from nothing, so
    Alice's own auth events show her joined and the newer join rule wins.
    ``expected`` is the v2.1 answer; the v2 answer lacks the join rules.
    """
    g = RoomGraph(version)
    g.member("IMA", ALICE, "join")
    g.power_levels("IPOWER", {BOB: 100}, auth=["IMA"])
    g.join_rules("IJR", "public", auth=["IMA", "IPOWER"])
    g.member("IMB", BOB, "join", auth=["IJR", "IPOWER"])
    g.join_rules("JR2", "invite", auth=["IMA", "IPOWER"])
    g.member("MA2", ALICE, "leave", auth=["IMA", "IPOWER"])
    shared = ("CREATE", "MA2", "IPOWER", "IMB")
    sets = [_state_with(g, shared, "JR2"), _state_with(g, shared, "IJR")]
    expected = g.named_state(_state_with(g, shared, "JR2"))
    return Scenario(g, sets, expected)


def stale_power_levels(version: RoomVersion) -> Scenario:
    """A fork whose power levels are stale, reachable only through a dodgy event.

    Alice promotes Bob (P2), Bob promotes Charlie (P3), Evelyn joins (ME1), then
    renames herself citing the *first* power levels (ME2), so the state after ME2
    holds P1. The other fork has P3 and Zara's join. v2 resolves P1 vs P3 alone:
    Bob is powerless under P1, so P3 fails and the room is reset to P1. v2.1 adds
    P2 and ME1, which lie on auth paths between conflicted events, replays the
    power levels in order, and keeps P3. ``expected`` is the v2.1 answer.
    """
    g = RoomGraph(version)
    g.member("IMA", ALICE, "join")
    g.power_levels("P1", {}, auth=["IMA"])
    g.join_rules("IJR", "public", auth=["IMA", "P1"])
    g.member("IMB", BOB, "join", auth=["P1", "IJR"])
    g.member("IMC", CHARLIE, "join", auth=["P1", "IJR"])
    g.power_levels("P2", {BOB: 50}, auth=["IMA", "P1"])
    g.power_levels("P3", {BOB: 50, CHARLIE: 50}, sender=BOB, auth=["IMB", "P2"])
    g.member("ME1", EVELYN, "join", auth=["P3", "IJR"])
    g.member("ME2", EVELYN, "join", displayname="Eve", auth=["P1", "IJR", "ME1"])
    g.member("MZ", ZARA, "join", auth=["P3", "IJR"])
    shared = ("CREATE", "IMA", "IMB", "IMC", "IJR")
    sets = [_state_with(g, shared, "ME2", "P1"), _state_with(g, shared, "MZ", "P3")]
    expected = g.named_state(_state_with(g, shared, "ME1", "MZ", "P3"))
    return Scenario(g, sets, expected)
