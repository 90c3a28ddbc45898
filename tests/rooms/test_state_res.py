"""State resolution v2 / v2.1, step by step and end to end.

Each step of the spec's algorithm is asserted on its own over small graphs from
``state_res_fixtures``, then whole resolutions are checked for v10, v11 and v12.
Where v2 and v2.1 disagree, the same graph is also resolved with only the
``state_res_v2_1`` flag flipped, so the difference is the algorithm's alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet import defer
from twisted.trial import unittest

from roost.rooms.state_res import (
    POWER_LEVELS_KEY,
    EventLoader,
    InMemoryStateResStore,
    StateResError,
    apply_unconflicted,
    auth_difference,
    conflicted_state_subgraph,
    full_conflicted_set,
    is_power_event,
    iterative_auth_checks,
    kahn_sort,
    mainline,
    mainline_ordering,
    mainline_position,
    power_event_graph,
    resolve_state,
    reverse_topological_power_ordering,
    sender_power_level,
    separate_conflicted,
)
from roost.rooms.versions import KNOWN_ROOM_VERSIONS, RoomVersion
from tests.rooms.state_res_fixtures import (
    ALICE,
    BASE,
    BOB,
    CHARLIE,
    SERVER,
    RoomGraph,
    Scenario,
    ban_vs_power_levels,
    base_room,
    join_rules_change,
    join_rules_reset,
    stale_power_levels,
    topic_after_demotion,
)

V10 = KNOWN_ROOM_VERSIONS["10"]
V11 = KNOWN_ROOM_VERSIONS["11"]
V12 = KNOWN_ROOM_VERSIONS["12"]

T = TypeVar("T")

if TYPE_CHECKING:
    _Base = unittest.TestCase
else:
    _Base = object


def with_v2_1(version: RoomVersion, enabled: bool) -> RoomVersion:
    """``version`` with only the state res algorithm switched, to isolate its effect."""
    return dataclasses.replace(version, state_res="v2.1" if enabled else "v2")


class CountingClock:
    """A clock that records how often state res yielded."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


class _AsyncMixin(_Base):
    def wait(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine that never waits on the reactor, and return its result."""
        return self.successResultOf(defer.ensureDeferred(coro))


class _Steps(_AsyncMixin):
    """The algorithm's steps, asserted for one room version (set by subclasses)."""

    version: RoomVersion

    def power_fork(self) -> RoomGraph:
        """Base room, Bob promoted to 50 (PA), then a fork of power events:
        Bob kicks Charlie (BC), Alice makes the room invite-only (AJR), Alice bans
        Charlie citing Bob's kick (AB)."""
        g = base_room(self.version)
        g.power_levels("PA", {BOB: 50}, auth=["IMA", "IPOWER"])
        g.member("BC", CHARLIE, "leave", sender=BOB, auth=["IMB", "PA", "IMC"])
        g.join_rules("AJR", "invite", auth=["IMA", "PA"])
        g.member("AB", CHARLIE, "ban", sender=ALICE, auth=["IMA", "PA", "BC"])
        return g

    # -- definitions --------------------------------------------------------------

    def test_is_power_event(self) -> None:
        g = self.power_fork()
        g.member("BL", BOB, "leave", auth=["IMB", "PA"])
        g.topic("T", "hi", auth=["IMA", "PA"])
        powers = {n for n in g.events if is_power_event(g.events[n])}
        # Bob leaving by himself (BL) takes nothing from anyone; a kick (BC) does.
        self.assertEqual(powers, {"CREATE", "IPOWER", "IJR", "PA", "BC", "AJR", "AB"})

    def test_auth_difference(self) -> None:
        """Events in some but not all full auth chains; the sets' own events count."""
        g = base_room(self.version)
        g.power_levels("PA", {BOB: 50}, auth=["IMA", "IPOWER"])
        g.power_levels("PB", {BOB: 50, CHARLIE: 50}, auth=["IMA", "PA"])
        sets = [g.state(*BASE, "PB"), g.state(*BASE)]
        diff = self.wait(auth_difference(g.room_id, sets, g.store()))
        # PA is in no state set but only in the first set's auth chain.
        self.assertEqual(g.names(diff), {"PA", "PB"})

    def subgraph_fork(self) -> tuple[RoomGraph, list[dict[tuple[str, str], str]]]:
        """PB cites PA cites IPOWER; one fork has PB, the other IPOWER. Charlie's
        rename (MC2) cites PA and is in both forks, so PA is in every auth chain:
        it lies between the conflicted PB and IPOWER but not in the auth difference."""
        g = base_room(self.version)
        g.power_levels("PA", {BOB: 50}, auth=["IMA", "IPOWER"])
        g.power_levels("PB", {BOB: 50, CHARLIE: 50}, auth=["IMA", "PA"])
        g.member("MC2", CHARLIE, "join", displayname="C", auth=["IMC", "PA", "IJR"])
        shared = (*BASE, "MC2")
        return g, [g.state(*shared, "PB"), g.state(*shared)]

    def test_conflicted_state_subgraph(self) -> None:
        g, _ = self.subgraph_fork()
        loader = g.loader()
        subgraph = self.wait(conflicted_state_subgraph(g.ids("PB", "IPOWER"), loader))
        self.assertEqual(g.names(subgraph), {"PB", "PA", "IPOWER"})
        # No path links IJR and PB: each is only its own endpoint.
        subgraph = self.wait(conflicted_state_subgraph(g.ids("PB", "IJR"), loader))
        self.assertEqual(g.names(subgraph), {"PB", "IJR"})

    def test_full_conflicted_set(self) -> None:
        g, sets = self.subgraph_fork()
        _, conflicted = separate_conflicted(sets)
        conflicted_ids = set().union(*conflicted.values())
        for v2_1, expected in ((False, {"PB", "IPOWER"}), (True, {"PB", "PA", "IPOWER"})):
            version = with_v2_1(self.version, v2_1)
            full = self.wait(
                full_conflicted_set(version, sets, conflicted_ids, g.store(), g.loader())
            )
            self.assertEqual(g.names(full), expected, f"v2.1={v2_1}")

    # -- step 1 ---------------------------------------------------------------

    def test_sender_power_level(self) -> None:
        g = self.power_fork()
        loader = g.loader()
        creator = math.inf if self.version.hydra else 100
        levels = {
            n: self.wait(sender_power_level(g.events[n], loader, self.version))
            for n in ("CREATE", "IMA", "IMB", "PA", "BC", "AB")
        }
        # IMA cites no power levels: the creator's default (100, or infinite in
        # v12). IMB cites IPOWER, where Bob has 0; BC cites PA, where he has 50.
        expected = {"CREATE": 0, "IMA": creator, "IMB": 0, "PA": creator, "BC": 50}
        expected["AB"] = creator
        self.assertEqual(levels, expected)

    def test_power_event_graph(self) -> None:
        g = self.power_fork()
        full = g.ids("PA", "BC", "AJR", "AB", "IMB")
        graph = self.wait(power_event_graph(full, g.loader()))
        named = {g.name(k): g.names(v) for k, v in graph.items()}
        # IMB is no power event, but BC cites it and it is in the full set, so it
        # joins X. IMA and IPOWER are outside the full set: no edges to them.
        expected = {
            "PA": set(),
            "BC": {"PA", "IMB"},
            "AJR": {"PA"},
            "AB": {"PA", "BC"},
            "IMB": set(),
        }
        self.assertEqual(named, expected)

    def test_reverse_topological_power_ordering(self) -> None:
        g = self.power_fork()
        loader = g.loader()
        graph = self.wait(power_event_graph(g.ids("PA", "BC", "AJR", "AB"), loader))
        order = self.wait(reverse_topological_power_ordering(graph, loader, self.version))
        # AJR (Alice) beats BC (Bob, earlier) on power; AB (Alice) must still wait
        # for BC, which it cites.
        self.assertEqual(g.ordered_names(order), ["PA", "AJR", "BC", "AB"])

    def test_reverse_topological_ties(self) -> None:
        """Equal power: earlier origin_server_ts first; equal ts too: smaller id first."""
        g = self.power_fork()
        ts = g.events["AJR"].origin_server_ts
        g.join_rules("AJR2", "public", auth=["IMA", "PA"], ts=ts)
        g.join_rules("AJR0", "knock", auth=["IMA", "PA"], ts=ts - 1)
        loader = g.loader()
        graph = {g.id(n): set() for n in ("AJR", "AJR2", "AJR0")}
        order = self.wait(reverse_topological_power_ordering(graph, loader, self.version))
        same_ts = sorted(g.ids("AJR", "AJR2"))
        self.assertEqual(order, [g.id("AJR0"), *same_ts])

    # -- steps 2 and 4 ----------------------------------------------------------

    def ban_fork(self) -> RoomGraph:
        return ban_vs_power_levels(self.version).graph

    def test_iterative_auth_checks_against_state(self) -> None:
        g = self.ban_fork()
        loader = g.loader()
        base = g.state(*BASE, "PA")
        state = self.wait(iterative_auth_checks(self.version, [g.id("PB")], base, loader))
        self.assertEqual(g.named_state(state)[POWER_LEVELS_KEY], "PB")
        # Once the ban is applied, Bob's power levels change no longer passes.
        order = [g.id("MB"), g.id("PB")]
        state = self.wait(iterative_auth_checks(self.version, order, base, loader))
        self.assertEqual(g.named_state(state), g.named_state(g.state(*BASE, "PA", "MB")))

    def test_iterative_auth_checks_fall_back_to_auth_events(self) -> None:
        """Keys missing from the state come from the event's own auth events."""
        g = self.ban_fork()
        state = self.wait(iterative_auth_checks(self.version, [g.id("PB")], {}, g.loader()))
        self.assertEqual(g.named_state(state), {POWER_LEVELS_KEY: "PB"})

    def test_iterative_auth_checks_state_beats_auth_events(self) -> None:
        """A key in the state wins over the event's auth event: Bob's ban in the
        state blocks PB although PB cites Bob's join."""
        g = self.ban_fork()
        base = g.state("MB")
        state = self.wait(iterative_auth_checks(self.version, [g.id("PB")], base, g.loader()))
        self.assertEqual(g.named_state(state), {("m.room.member", BOB): "MB"})

    # -- step 3 -----------------------------------------------------------------

    def mainline_room(self) -> RoomGraph:
        """Power levels IPOWER <- PA <- PB, and PX forking off IPOWER; topics citing
        each, with timestamps chosen against the mainline order."""
        g = base_room(self.version)
        g.power_levels("PA", {BOB: 50}, auth=["IMA", "IPOWER"])
        g.power_levels("PB", {BOB: 60}, auth=["IMA", "PA"])
        g.power_levels("PX", {BOB: 70}, auth=["IMA", "IPOWER"])
        g.topic("TC", "c", auth=["IMA", "PB"], ts=1)
        g.topic("TB", "b", auth=["IMA", "PA"], ts=2)
        g.topic("TA", "a", auth=["IMA", "IPOWER"], ts=4)
        g.topic("TX", "x", auth=["IMA", "PX"], ts=3)
        g.topic("TN", "n", auth=["IMA"], ts=5)
        return g

    def test_mainline(self) -> None:
        g = self.mainline_room()
        loader = g.loader()
        self.assertEqual(
            g.ordered_names(self.wait(mainline(g.id("PB"), loader))), ["PB", "PA", "IPOWER"]
        )
        self.assertEqual(self.wait(mainline(None, loader)), [])

    def test_mainline_position(self) -> None:
        g = self.mainline_room()
        loader = g.loader()
        positions = {e: i for i, e in enumerate(self.wait(mainline(g.id("PB"), loader)))}
        found = {
            n: self.wait(mainline_position(g.events[n], positions, loader))
            for n in ("TC", "TB", "TA", "TX", "TN", "PB")
        }
        # TX reaches the mainline through PX; TN cites no power levels at all; PB
        # itself is not counted (j >= 1), so it sits at its parent PA.
        expected = {"TC": 0, "TB": 1, "TA": 2, "TX": 2, "TN": math.inf, "PB": 1}
        self.assertEqual(found, expected)

    def test_mainline_ordering(self) -> None:
        g = self.mainline_room()
        topics = g.ids("TC", "TB", "TA", "TX", "TN")
        order = self.wait(mainline_ordering(topics, g.id("PB"), g.loader()))
        # Earlier mainline position first whatever the timestamps; TX and TA tie
        # on position 2 and go by timestamp.
        self.assertEqual(g.ordered_names(order), ["TN", "TX", "TA", "TB", "TC"])
        # Without power levels every position is infinite: timestamps decide.
        order = self.wait(mainline_ordering(topics, None, g.loader()))
        self.assertEqual(g.ordered_names(order), ["TC", "TB", "TX", "TA", "TN"])

    # -- whole resolutions ------------------------------------------------------

    def resolve(self, scenario: Scenario, version: RoomVersion | None = None) -> dict:
        g = scenario.graph
        result = self.wait(
            resolve_state(g.room_id, version or self.version, scenario.state_sets, g.store())
        )
        return g.named_state(result)

    def test_ban_vs_power_levels(self) -> None:
        scenario = ban_vs_power_levels(self.version)
        self.assertEqual(self.resolve(scenario), scenario.expected)

    def test_ban_vs_power_levels_order_of_sets(self) -> None:
        """Resolution does not depend on the order of the state sets."""
        scenario = ban_vs_power_levels(self.version)
        scenario.state_sets.reverse()
        self.assertEqual(self.resolve(scenario), scenario.expected)

    def test_topic_after_demotion(self) -> None:
        scenario = topic_after_demotion(self.version)
        self.assertEqual(self.resolve(scenario), scenario.expected)

    def test_join_rules_change(self) -> None:
        scenario = join_rules_change(self.version)
        self.assertEqual(self.resolve(scenario), scenario.expected)

    def test_join_rules_reset(self) -> None:
        """v2 loses the join rules (Alice has left in the unconflicted state); v2.1
        checks them against Alice's own auth events and keeps the newer one."""
        scenario = join_rules_reset(self.version)
        v2_answer = dict(scenario.expected)
        del v2_answer[("m.room.join_rules", "")]
        expected = scenario.expected if self.version.state_res_v2_1 else v2_answer
        self.assertEqual(self.resolve(scenario), expected)
        self.assertEqual(self.resolve(scenario, with_v2_1(self.version, False)), v2_answer)
        self.assertEqual(self.resolve(scenario, with_v2_1(self.version, True)), scenario.expected)

    def test_stale_power_levels(self) -> None:
        """v2 resets the power levels to the stale P1; v2.1 replays P2 and keeps P3."""
        scenario = stale_power_levels(self.version)
        v2_answer = dict(scenario.expected)
        v2_answer[POWER_LEVELS_KEY] = "P1"
        v2_answer[("m.room.member", "@evelyn:" + SERVER)] = "ME2"
        expected = scenario.expected if self.version.state_res_v2_1 else v2_answer
        self.assertEqual(self.resolve(scenario), expected)
        self.assertEqual(self.resolve(scenario, with_v2_1(self.version, False)), v2_answer)
        self.assertEqual(self.resolve(scenario, with_v2_1(self.version, True)), scenario.expected)

    def test_no_conflict(self) -> None:
        g = base_room(self.version)
        state = g.state(*BASE)
        store = g.store()
        self.assertEqual(self.wait(resolve_state(g.room_id, self.version, [state], store)), state)
        both = [state, dict(state)]
        self.assertEqual(self.wait(resolve_state(g.room_id, self.version, both, store)), state)
        self.assertEqual(self.wait(resolve_state(g.room_id, self.version, [], store)), {})

    def test_key_missing_from_one_set(self) -> None:
        """A key absent from one set is conflicted, and survives if it passes auth."""
        g = base_room(self.version)
        g.topic("T", "hello", auth=["IMA", "IPOWER"])
        sets = [g.state(*BASE, "T"), g.state(*BASE)]
        result = self.wait(resolve_state(g.room_id, self.version, sets, g.store()))
        self.assertEqual(g.named_state(result), g.named_state(g.state(*BASE, "T")))

    def test_unknown_events_are_left_out(self) -> None:
        g = base_room(self.version)
        g.topic("T", "hello", auth=["IMA", "IPOWER"])
        missing = "$unknown-event"
        sets = [g.state(*BASE, "T"), {**g.state(*BASE), ("m.room.topic", ""): missing}]
        result = self.wait(resolve_state(g.room_id, self.version, sets, g.store()))
        self.assertEqual(g.named_state(result), g.named_state(g.state(*BASE, "T")))

    def test_yields_to_the_clock(self) -> None:
        """A resolution over a few hundred events sleeps now and then."""
        g = base_room(self.version)
        names = []
        for i in range(150):
            user = f"@user{i}:{SERVER}"
            names.append(f"M{i}")
            g.member(f"M{i}", user, "join", auth=["IJR", "IPOWER"])
        clock = CountingClock()
        sets = [g.state(*BASE, *names), g.state(*BASE)]
        result = self.wait(resolve_state(g.room_id, self.version, sets, g.store(), clock))
        self.assertEqual(g.named_state(result), g.named_state(sets[0]))
        self.assertTrue(clock.sleeps)
        self.assertEqual(set(clock.sleeps), {0})


class V10StepsTests(_Steps, unittest.TestCase):
    version = V10


# v2-v9 share v2 state resolution; v2 also has the v1 event format (ids in the
# PDU, [id, hashes] references), v3 standard base64 ids, v4+ URL-safe ones.
class V2StepsTests(_Steps, unittest.TestCase):
    version = KNOWN_ROOM_VERSIONS["2"]


class V3StepsTests(_Steps, unittest.TestCase):
    version = KNOWN_ROOM_VERSIONS["3"]


class V5StepsTests(_Steps, unittest.TestCase):
    version = KNOWN_ROOM_VERSIONS["5"]


class V9StepsTests(_Steps, unittest.TestCase):
    version = KNOWN_ROOM_VERSIONS["9"]


class V11StepsTests(_Steps, unittest.TestCase):
    version = V11


class V12StepsTests(_Steps, unittest.TestCase):
    version = V12

    def test_additional_creators_outrank_everyone(self) -> None:
        """In v12 additional creators are infinitely powerful too, so their power
        events sort before anyone else's, however early the other's timestamp."""
        g = base_room(V12, additional_creators=[BOB])
        g.power_levels("PC", {CHARLIE: 100}, auth=["IMA", "IPOWER"])
        g.join_rules("CJR", "invite", sender=CHARLIE, auth=["IMC", "PC"], ts=1)
        g.join_rules("BJR", "knock", sender=BOB, auth=["IMB", "PC"])
        loader = g.loader()
        self.assertEqual(self.wait(sender_power_level(g.events["BJR"], loader, V12)), math.inf)
        self.assertEqual(self.wait(sender_power_level(g.events["CJR"], loader, V12)), 100)
        graph = {g.id("CJR"): set(), g.id("BJR"): set()}
        order = self.wait(reverse_topological_power_ordering(graph, loader, V12))
        self.assertEqual(g.ordered_names(order), ["BJR", "CJR"])
        sets = [g.state(*BASE, "PC", "CJR"), g.state(*BASE, "PC", "BJR")]
        result = g.named_state(self.wait(resolve_state(g.room_id, V12, sets, g.store())))
        # Bob's change is applied first, then Charlie's (also allowed) on top.
        self.assertEqual(result[("m.room.join_rules", "")], "CJR")


class VersionFreeTests(_AsyncMixin, unittest.TestCase):
    """Pieces that do not depend on the room version."""

    def test_separate_conflicted(self) -> None:
        a, b, c = ("t", "a"), ("t", "b"), ("t", "c")
        sets = [{a: "$1", b: "$2", c: "$4"}, {a: "$1", b: "$3"}, {a: "$1", b: "$3", c: "$4"}]
        unconflicted, conflicted = separate_conflicted(sets)
        self.assertEqual(unconflicted, {a: "$1"})
        # c is missing from one set: conflicted, with the one event it has.
        self.assertEqual(conflicted, {b: {"$2", "$3"}, c: {"$4"}})
        self.assertEqual(separate_conflicted([]), ({}, {}))

    def test_kahn_sort(self) -> None:
        # d -> b -> a, d -> c -> a; the key prefers c over b.
        graph = {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}, "e": set()}
        key = {"a": 3, "b": 2, "c": 1, "d": 0, "e": 4}
        self.assertEqual(kahn_sort(graph, key.__getitem__), ["a", "c", "b", "d", "e"])

    def test_kahn_sort_cycle(self) -> None:
        with self.assertRaises(StateResError):
            kahn_sort({"a": {"b"}, "b": {"a"}}, str)

    def test_apply_unconflicted(self) -> None:
        resolved = {("t", "a"): "$x", ("t", "b"): "$y"}
        final = apply_unconflicted(resolved, {("t", "a"): "$u", ("t", "c"): "$v"})
        self.assertEqual(final, {("t", "a"): "$u", ("t", "b"): "$y", ("t", "c"): "$v"})

    def test_in_memory_store(self) -> None:
        g = base_room(V11)
        store = g.store()
        self.assertEqual(
            g.names(store.full_auth_chain([g.id("IMB")])),
            {"IMB", "IJR", "IPOWER", "IMA", "CREATE"},
        )
        found = self.wait(store.get_events([g.id("IMA"), "$nope"]))
        self.assertEqual(list(found), [g.id("IMA")])
        diff = self.wait(store.get_auth_chain_difference(g.room_id, [g.ids("IMB"), g.ids("IMC")]))
        self.assertEqual(g.names(diff), {"IMB", "IMC"})
        self.assertEqual(self.wait(store.get_auth_chain_difference(g.room_id, [])), set())

    def test_events_from_another_room_are_refused(self) -> None:
        g = base_room(V11)
        other = RoomGraph(V11, room_id="!other:" + SERVER)
        other.member("IMA", ALICE, "join")
        other.topic("T", "elsewhere", auth=["IMA"])
        store = InMemoryStateResStore([*g.events.values(), *other.events.values()])
        sets = [g.state(*BASE), {**g.state(*BASE), ("m.room.topic", ""): other.id("T")}]
        d = defer.ensureDeferred(resolve_state(g.room_id, V11, sets, store))
        self.failureResultOf(d, StateResError)
        loader = EventLoader(store, g.room_id)
        self.failureResultOf(defer.ensureDeferred(loader.load([other.id("T")])), StateResError)
