"""State resolution v1 (rooms/v1 "State resolution"): its passes and orderings,
on v1 rooms built with the v1 event format (ids in the PDU, [id, hashes] pairs)."""

from __future__ import annotations

import hashlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.trial import unittest

from roost.rooms.state_res import resolve_state
from roost.rooms.state_res_v1 import (
    StateResV1Error,
    ordered_events,
    resolve_auth_events,
    resolve_state_v1,
    separate,
)
from roost.rooms.versions import KNOWN_ROOM_VERSIONS
from tests.rooms.state_res_fixtures import (
    ALICE,
    BASE,
    BOB,
    CHARLIE,
    ZARA,
    RoomGraph,
    _state_with,
    ban_vs_power_levels,
    base_room,
    join_rules_change,
    topic_after_demotion,
)

V1 = KNOWN_ROOM_VERSIONS["1"]
V2 = KNOWN_ROOM_VERSIONS["2"]
T = TypeVar("T")


class StateResV1Tests(unittest.TestCase):
    def wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.successResultOf(defer.ensureDeferred(coro))

    def resolve(self, g: RoomGraph, sets: list[dict[tuple[str, str], str]]) -> dict:
        return g.named_state(self.wait(resolve_state(g.room_id, V1, sets, g.store())))

    def test_v1_events_carry_their_ids_and_pairs(self) -> None:
        g = base_room(V1)
        event = g.events["IMB"]
        self.assertEqual(event.event_id, "$IMB:example.com")
        self.assertEqual(event.prev_event_ids, ("$IJR:example.com",))
        self.assertIn("$CREATE:example.com", event.auth_event_ids)

    def test_separate_treats_a_key_missing_from_a_set_as_unconflicted(self) -> None:
        a, b = ("t", "a"), ("t", "b")
        unconflicted, conflicted = separate([{a: "$1", b: "$2"}, {a: "$1"}, {b: "$3"}])
        self.assertEqual(unconflicted, {a: "$1"})
        self.assertEqual(conflicted, {b: {"$2", "$3"}})

    def test_one_state_set_is_its_own_resolution(self) -> None:
        g = base_room(V1)
        state = g.state(*BASE)
        self.assertEqual(self.wait(resolve_state_v1(g.room_id, V1, [state], g.store())), state)

    def test_shared_scenarios_reach_the_same_answer_as_v2(self) -> None:
        for scenario_of in (ban_vs_power_levels, topic_after_demotion):
            scenario = scenario_of(V1)
            self.assertEqual(self.resolve(scenario.graph, scenario.state_sets),
                             scenario.expected, scenario_of.__name__)

    def test_a_key_only_one_fork_has_is_not_a_conflict_in_v1(self) -> None:
        """Zara joins in one fork while the other makes the room invite-only: v2
        re-checks her join through the auth difference and drops it; v1 sees no
        conflict for her key and keeps it (one of v1's known state resets)."""
        scenario = join_rules_change(V1)
        result = self.resolve(scenario.graph, scenario.state_sets)
        self.assertEqual(result, {**scenario.expected, ("m.room.member", ZARA): "MZ"})

    def test_other_conflicts_take_the_greatest_depth_not_the_latest_timestamp(self) -> None:
        """v2 orders topics by mainline then origin_server_ts; v1 by depth alone."""
        for version, winner in ((V1, "T2"), (V2, "T1")):
            g = base_room(version)
            g.topic("T1", "later clock, shallower", auth=["IMA", "IPOWER"], ts=10**9)
            g.topic("T2", "earlier clock, deeper", auth=["IMA", "IPOWER"], ts=1)
            sets = [_state_with(g, BASE, "T1"), _state_with(g, BASE, "T2")]
            result = g.named_state(self.wait(resolve_state(g.room_id, version, sets, g.store())))
            self.assertEqual(result[("m.room.topic", "")], winner, version.identifier)

    def test_equal_depth_ties_go_to_the_lowest_sha1_of_the_event_id(self) -> None:
        g = base_room(V1)
        g.topic("TA", "a", auth=["IMA", "IPOWER"], depth=20)
        g.topic("TB", "b", auth=["IMA", "IPOWER"], depth=20)
        sha = {n: hashlib.sha1(g.id(n).encode()).hexdigest() for n in ("TA", "TB")}
        expected = min(sha, key=sha.__getitem__)
        sets = [_state_with(g, BASE, "TA"), _state_with(g, BASE, "TB")]
        self.assertEqual(self.resolve(g, sets)[("m.room.topic", "")], expected)
        ordered = ordered_events([g.events["TA"], g.events["TB"]])
        self.assertEqual(ordered[0].event_id, g.id(expected))

    def test_a_disallowed_topic_is_skipped_for_an_allowed_shallower_one(self) -> None:
        g = base_room(V1)
        g.topic("T1", "Alice's", auth=["IMA", "IPOWER"])
        g.topic("T2", "Bob's, without the power", sender=BOB, auth=["IMB", "IPOWER"])
        sets = [_state_with(g, BASE, "T1"), _state_with(g, BASE, "T2")]
        self.assertEqual(self.resolve(g, sets)[("m.room.topic", "")], "T1")

    def test_power_levels_walk_up_from_the_shallowest_and_stop_at_the_first_refusal(self) -> None:
        """PA (allowed), PB (Charlie has no power: refused), PC (allowed): the walk
        stops at PB, so PA stands although PC would pass on its own."""
        g = base_room(V1)
        g.power_levels("PA", {BOB: 50}, auth=["IMA", "IPOWER"])
        g.power_levels("PB", {CHARLIE: 100}, sender=CHARLIE, auth=["IMC", "IPOWER"])
        g.power_levels("PC", {BOB: 60}, auth=["IMA", "IPOWER"])
        sets = [_state_with(g, BASE, n) for n in ("PA", "PB", "PC")]
        self.assertEqual(self.resolve(g, sets)[("m.room.power_levels", "")], "PA")
        resolved = {key: g.events[n] for key, n in g.named_state(g.state(*BASE)).items()
                    if key != ("m.room.power_levels", "")}
        chosen = resolve_auth_events(V1, [g.events[n] for n in ("PC", "PB", "PA")], resolved)
        self.assertEqual(g.name(chosen.event_id), "PA")

    def test_members_are_resolved_against_the_resolved_join_rules(self) -> None:
        """Join rules go first: once the room is invite-only, Zara's join fails and the
        member key falls back to her earlier leave."""
        g = base_room(V1)
        g.member("MZ0", ZARA, "leave", sender=ALICE, auth=["IMA", "IPOWER"])
        g.join_rules("JR2", "invite", auth=["IMA", "IPOWER"])
        g.member("MZ", ZARA, "join", auth=["IJR", "IPOWER", "MZ0"])
        sets = [_state_with(g, BASE, "MZ0", "JR2"), _state_with(g, BASE, "MZ")]
        result = self.resolve(g, sets)
        self.assertEqual(result[("m.room.join_rules", "")], "JR2")
        self.assertEqual(result[("m.room.member", ZARA)], "MZ0")

    def test_unconflicted_state_is_kept_as_is(self) -> None:
        g = base_room(V1)
        g.topic("T1", "x", auth=["IMA", "IPOWER"])
        g.topic("T2", "y", auth=["IMA", "IPOWER"])
        sets = [_state_with(g, BASE, "T1"), _state_with(g, BASE, "T2")]
        result = self.resolve(g, sets)
        for key, name in g.named_state(g.state(*BASE)).items():
            self.assertEqual(result[key], name)
        self.assertEqual(result[("m.room.member", ALICE)], "IMA")

    def test_events_from_another_room_are_refused(self) -> None:
        g = base_room(V1)
        other = RoomGraph(V1, room_id="!other:example.com")
        other.topic("TX", "elsewhere", auth=[])
        g.topic("T1", "x", auth=["IMA", "IPOWER"])
        store = g.store()
        store.add(other.events["TX"])
        sets = [_state_with(g, BASE, "T1"), {**g.state(*BASE), **other.state("TX")}]
        failure = self.failureResultOf(
            defer.ensureDeferred(resolve_state_v1(g.room_id, V1, sets, store)))
        failure.trap(StateResV1Error)
