"""Presence: state changes, last_active_ago, idle and offline timeouts on a fake clock,
stream positions and notifications, and GET/PUT /presence/{userId}/status over HTTP.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from roost.client_api.errors import MatrixError
from roost.client_api.presence import PresenceTracker
from roost.storage.notifier import Notifier, StreamChange
from roost.storage.streams import StreamIdGenerator
from tests.client_api.test_profile import V3, start_with_profiles, uid
from tests.server_harness import q

ALICE = uid("alice")
BOB = uid("bob")


def fake_clock() -> Clock:
    clock = Clock()
    clock.advance(1_800_000_000)
    return clock


class TrackerHarness:
    """A tracker on a fake clock, recording every presence notification."""

    def __init__(self, idle: float = 300, offline: float = 30) -> None:
        self.clock = fake_clock()
        self.notifier = Notifier()
        self.changes: list[StreamChange] = []
        self.notifier.add_listener(self.changes.append)
        self.tracker = PresenceTracker(self.clock, self.notifier, StreamIdGenerator(0),
                                       idle_timeout_s=idle, offline_timeout_s=offline)

    def presence(self, user_id: str = ALICE) -> str:
        return str(self.tracker.get(user_id)["presence"])


class PresenceTrackerTests(TestCase):
    def test_unknown_user_is_offline_with_no_activity(self) -> None:
        h = TrackerHarness()
        self.assertEqual(h.tracker.get(ALICE), {"presence": "offline", "currently_active": False})
        self.assertEqual(h.tracker.current, 0)

    def test_activity_makes_a_user_online_and_last_active_ago_follows_the_clock(self) -> None:
        h = TrackerHarness()
        h.tracker.user_active(ALICE)
        self.assertEqual(h.tracker.get(ALICE), {"presence": "online", "currently_active": True,
                                                "last_active_ago": 0})
        h.clock.advance(12.5)
        self.assertEqual(h.tracker.get(ALICE)["last_active_ago"], 12_500)
        h.tracker.user_active(ALICE)
        self.assertEqual(h.tracker.get(ALICE)["last_active_ago"], 0)

    def test_each_change_takes_a_new_position_and_notifies_the_user(self) -> None:
        h = TrackerHarness()
        h.tracker.user_active(ALICE)
        h.tracker.user_active(ALICE)  # already online: no change, no position
        h.tracker.user_active(BOB)
        self.assertEqual([(c.stream, c.position, set(c.users)) for c in h.changes],
                         [("presence", 1, {ALICE}), ("presence", 2, {BOB})])
        self.assertEqual(h.tracker.current, 2)
        self.assertEqual(h.notifier.positions["presence"], 2)

    async def test_set_presence_and_status_message(self) -> None:
        h = TrackerHarness()
        await h.tracker.set_presence(ALICE, "unavailable", "at lunch")
        self.assertEqual(h.tracker.get(ALICE), {"presence": "unavailable", "currently_active": False,
                                                "last_active_ago": 0, "status_msg": "at lunch"})
        await h.tracker.set_presence(ALICE, "unavailable", "at lunch")  # the same: no change
        await h.tracker.set_presence(ALICE, "unavailable", "back soon")
        await h.tracker.set_presence(ALICE, "online", None)
        self.assertEqual([c.position for c in h.changes], [1, 2, 3])
        self.assertNotIn("status_msg", h.tracker.get(ALICE))

    async def test_invalid_presence_is_refused(self) -> None:
        h = TrackerHarness()
        for value in ("busy", "", "ONLINE"):
            with self.assertRaises(MatrixError) as caught:
                await h.tracker.set_presence(ALICE, value, None)
            self.assertEqual(caught.exception.errcode, "M_INVALID_PARAM")
        self.assertEqual(h.changes, [])

    def test_idle_user_becomes_unavailable(self) -> None:
        h = TrackerHarness(idle=300, offline=30)
        h.tracker.connection_opened(ALICE)
        h.tracker.user_active(ALICE)
        h.clock.advance(299)
        h.tracker.user_active(ALICE)  # activity restarts the idle timer
        h.clock.advance(299)
        self.assertEqual(h.presence(), "online")
        h.clock.advance(1)
        self.assertEqual(h.presence(), "unavailable")
        self.assertEqual(h.tracker.get(ALICE)["last_active_ago"], 300_000)
        h.tracker.user_active(ALICE)
        self.assertEqual(h.presence(), "online")

    def test_user_goes_offline_after_the_last_connection_closes(self) -> None:
        h = TrackerHarness(offline=30)
        h.tracker.connection_opened(ALICE)
        h.tracker.connection_opened(ALICE)
        h.tracker.user_active(ALICE)
        h.tracker.connection_closed(ALICE)
        h.clock.advance(60)
        self.assertEqual(h.presence(), "online")  # one connection is still open
        h.tracker.connection_closed(ALICE)
        h.clock.advance(29)
        self.assertEqual(h.presence(), "online")
        h.clock.advance(1)
        self.assertEqual(h.presence(), "offline")
        self.assertEqual([c.position for c in h.changes], [1, 2])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_stop_cancels_every_timer(self) -> None:
        h = TrackerHarness()
        h.tracker.user_active(ALICE)
        h.tracker.connection_opened(BOB)
        h.tracker.user_active(BOB)
        h.tracker.stop()
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_reconnecting_within_the_timeout_keeps_the_user_online(self) -> None:
        h = TrackerHarness(offline=30)
        h.tracker.connection_opened(ALICE)
        h.tracker.user_active(ALICE)
        h.tracker.connection_closed(ALICE)
        h.clock.advance(20)
        h.tracker.connection_opened(ALICE)
        h.clock.advance(60)
        self.assertEqual(h.presence(), "online")
        self.assertEqual(len(h.changes), 1)

    def test_repeated_syncs_keep_one_idle_and_one_offline_timer(self) -> None:
        """A /sync's activity moves the deadlines, not the timers: after many syncs in a
        row the user still has one of each pending, and both still fire on time."""
        h = TrackerHarness(idle=300, offline=30)
        for _ in range(100):
            h.tracker.user_active(ALICE)
            h.tracker.connection_opened(ALICE)
            h.tracker.connection_closed(ALICE)
            h.clock.advance(1)
        self.assertEqual(len(h.clock.getDelayedCalls()), 2)
        h.clock.advance(28)  # the last sync ended 29 s ago
        self.assertEqual(h.presence(), "online")
        h.clock.advance(1)
        self.assertEqual(h.presence(), "offline")
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_activity_without_a_connection_still_times_out(self) -> None:
        h = TrackerHarness(offline=30)
        h.tracker.user_active(ALICE)
        h.clock.advance(20)
        h.tracker.user_active(ALICE)
        h.clock.advance(29)
        self.assertEqual(h.presence(), "online")
        h.clock.advance(1)
        self.assertEqual(h.presence(), "offline")

    async def test_explicit_offline_cancels_timers(self) -> None:
        h = TrackerHarness()
        h.tracker.user_active(ALICE)
        await h.tracker.set_presence(ALICE, "offline", None)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(h.presence(), "offline")

    async def test_changes_since_returns_latest_presence_of_the_asked_users(self) -> None:
        h = TrackerHarness()
        h.tracker.user_active(ALICE)  # 1
        start = h.tracker.current
        h.tracker.user_active(BOB)  # 2
        await h.tracker.set_presence(ALICE, "unavailable", "away")  # 3
        h.clock.advance(5)
        events = h.tracker.changes_since(start, {ALICE, BOB, uid("carol")})
        self.assertEqual(events, [
            {"type": "m.presence", "sender": BOB,
             "content": {"presence": "online", "currently_active": True, "last_active_ago": 5000}},
            {"type": "m.presence", "sender": ALICE,
             "content": {"presence": "unavailable", "currently_active": False,
                         "last_active_ago": 5000, "status_msg": "away"}},
        ])
        self.assertEqual(h.tracker.changes_since(start, {BOB}), events[:1])
        self.assertEqual(h.tracker.changes_since(h.tracker.current, {ALICE, BOB}), [])

    def test_a_position_from_before_a_restart_resends_everything(self) -> None:
        h = TrackerHarness()
        h.tracker.user_active(ALICE)
        events = h.tracker.changes_since(1000, {ALICE})
        self.assertEqual([e["sender"] for e in events], [ALICE])


class PresenceHttpTests(TestCase):
    async def test_put_then_get_status(self) -> None:
        clock = fake_clock()
        server = await start_with_profiles(self, clock=clock)
        token = await server.user("alice")
        path = f"{V3}/presence/{q(ALICE)}/status"
        await server.ok("PUT", path, {"presence": "unavailable", "status_msg": "busy"}, token)
        clock.advance(3)
        self.assertEqual(await server.ok("GET", path, token=token),
                         {"presence": "unavailable", "currently_active": False,
                          "last_active_ago": 3000, "status_msg": "busy"})
        self.assertEqual(server.presence_stream.current, 1)

    async def test_only_yourself_may_set_presence_and_unknown_users_are_not_found(self) -> None:
        server = await start_with_profiles(self)
        alice = await server.user("alice")
        bob = await server.user("bob")
        resp = await server.request("PUT", f"{V3}/presence/{q(ALICE)}/status",
                                    {"presence": "online"}, token=bob)
        self.assertEqual((resp.status, resp.body["errcode"]), (403, "M_FORBIDDEN"))
        # Reading someone's presence needs a room shared with them.
        resp = await server.request("GET", f"{V3}/presence/{q(ALICE)}/status", token=bob)
        self.assertEqual((resp.status, resp.body["errcode"]), (403, "M_FORBIDDEN"))
        room = await server.ok("POST", f"{V3}/createRoom", {"preset": "public_chat"}, token=bob)
        await server.ok("POST", f"{V3}/join/{q(room['room_id'])}", {}, token=alice)
        seen = await server.ok("GET", f"{V3}/presence/{q(ALICE)}/status", token=bob)
        self.assertEqual(seen, {"presence": "offline", "currently_active": False})
        for user_id in (uid("nobody"), "@x:elsewhere.example"):
            resp = await server.request("GET", f"{V3}/presence/{q(user_id)}/status", token=bob)
            self.assertEqual((resp.status, resp.body["errcode"]), (404, "M_NOT_FOUND"))

    async def test_bad_put_bodies(self) -> None:
        server = await start_with_profiles(self)
        token = await server.user("alice")
        path = f"{V3}/presence/{q(ALICE)}/status"
        cases = [
            ({}, "M_MISSING_PARAM"),
            ({"presence": "busy"}, "M_INVALID_PARAM"),
            ({"presence": 1}, "M_INVALID_PARAM"),
            ({"presence": "online", "status_msg": 5}, "M_INVALID_PARAM"),
        ]
        for body, errcode in cases:
            resp = await server.request("PUT", path, body, token=token)
            self.assertEqual((resp.status, resp.body["errcode"]), (400, errcode), body)
        resp = await server.request("GET", path)
        self.assertEqual(resp.status, 401)
