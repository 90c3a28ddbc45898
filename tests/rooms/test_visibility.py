"""The pure access rules (roost/rooms/visibility.py), with plain lists as histories."""

from __future__ import annotations

import random

from twisted.trial.unittest import TestCase

from roost.rooms.visibility import (
    AT_DEPARTURE,
    CURRENT,
    EVENTS,
    JOINED,
    STATE,
    Standing,
    Visibility,
    can_see_event,
    room_read,
    server_can_see_event,
    value_at,
)


class EventRuleTests(TestCase):
    def test_joined_visibility_shows_only_what_came_while_joined(self) -> None:
        vis = [(1, "joined")]
        member = [(5, "join"), (9, "leave")]
        self.assertEqual([p for p in range(1, 12) if can_see_event(vis, member, p)],
                         [5, 6, 7, 8])

    def test_shared_shows_earlier_history_to_a_later_member(self) -> None:
        self.assertTrue(can_see_event([(1, "shared")], [(5, "join")], 2))
        self.assertFalse(can_see_event([(1, "shared")], [(5, "invite")], 2))

    def test_invited_visibility_starts_at_the_invite(self) -> None:
        vis = [(1, "invited")]
        self.assertFalse(can_see_event(vis, [(5, "invite")], 4))
        self.assertTrue(can_see_event(vis, [(5, "invite")], 6))

    def test_no_membership_sees_only_world_readable(self) -> None:
        self.assertFalse(can_see_event([(1, "shared")], [], 3))
        self.assertTrue(can_see_event([(1, "world_readable")], [], 3))

    def test_a_server_sees_what_one_of_its_users_could(self) -> None:
        vis = [(1, "joined")]
        late, early = [(10, "join")], [(3, "join")]
        self.assertFalse(server_can_see_event(vis, [late], 5))
        self.assertTrue(server_can_see_event(vis, [late, early], 5))
        self.assertFalse(server_can_see_event(vis, [], 5))
        self.assertTrue(server_can_see_event([(1, "world_readable")], [], 5))


class RoomRuleTests(TestCase):
    def test_each_standing_and_kind(self) -> None:
        cases = [
            (Standing("join", True, False, False), {EVENTS: CURRENT, STATE: CURRENT,
                                                    JOINED: CURRENT}),
            (Standing("leave", True, False, False), {EVENTS: AT_DEPARTURE, STATE: AT_DEPARTURE,
                                                     JOINED: None}),
            (Standing("ban", True, False, False), {EVENTS: AT_DEPARTURE, STATE: AT_DEPARTURE,
                                                   JOINED: None}),
            (Standing("leave", True, True, False), {EVENTS: None, STATE: None, JOINED: None}),
            (Standing("leave", False, False, False), {EVENTS: None, STATE: None, JOINED: None}),
            (Standing("invite", False, False, False), {EVENTS: None, STATE: None, JOINED: None}),
            (Standing(None, False, False, False), {EVENTS: None, STATE: None, JOINED: None}),
            (Standing(None, False, False, True), {EVENTS: CURRENT, STATE: CURRENT,
                                                  JOINED: CURRENT}),
        ]
        for standing, expected in cases:
            got = {kind: room_read(standing, kind) for kind in expected}
            self.assertEqual(got, expected, standing)


class IndexedVisibilityTests(TestCase):
    """`Visibility` (one reader, many events) answers exactly as can_see_event and value_at."""

    def test_same_answers_as_the_spec_steps_for_every_history(self) -> None:
        rng = random.Random(10)
        values = ["shared", "invited", "joined", "world_readable"]
        memberships = ["join", "leave", "invite", "ban", "knock"]
        for _ in range(2000):
            vis = [(p, rng.choice(values)) for p in sorted(rng.sample(range(60), rng.randint(0, 4)))]
            mem = [(p, rng.choice(memberships))
                   for p in sorted(rng.sample(range(60), rng.randint(0, 5)))]
            rules = Visibility(vis, mem)
            for position in range(-2, 62):
                self.assertEqual(rules.can_see(position), can_see_event(vis, mem, position),
                                 (vis, mem, position))
                self.assertEqual(rules.membership_at(position), value_at(mem, position, None))
                if rules.joined_since is not None and position >= rules.joined_since:
                    self.assertEqual(rules.membership_at(position), "join")
                    self.assertTrue(rules.can_see(position))
            if mem and mem[-1][1] == "join":
                self.assertEqual(rules.joined_since, mem[-1][0])
            else:
                self.assertIsNone(rules.joined_since)
