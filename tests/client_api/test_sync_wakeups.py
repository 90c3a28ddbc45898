"""Who a change wakes (client_api/sync.py `Watch`): everyone whose sync it would change,
and no one else: a presence change wakes only those who share a joined room with its user."""

from __future__ import annotations

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from roost.client_api.sync import ChangeWaiter
from tests.server_harness import RunningServer, q, start_server

V3 = "/_matrix/client/v3"


def _frozen_clock() -> task.Clock:
    clock = task.Clock()
    clock.advance(reactor.seconds())  # type: ignore[attr-defined]
    return clock


class PresenceWakeTests(TestCase):
    async def _server(self) -> tuple[RunningServer, dict[str, str], ChangeWaiter]:
        server = await start_server(self, clock=_frozen_clock())
        tokens = {n: (await server.register(n))["access_token"]
                  for n in ("alice", "bob", "carol", "dave")}
        shared = (await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                       token=tokens["alice"])).body["room_id"]
        joined = await server.request("POST", V3 + f"/rooms/{shared}/join", {},
                                      token=tokens["bob"])
        assert joined.status == 200, joined.body
        # carol is alone in a room of her own; dave is invited to the shared room only.
        await server.request("POST", V3 + "/createRoom", {}, token=tokens["carol"])
        invited = await server.request("POST", V3 + f"/rooms/{shared}/invite",
                                       {"user_id": "@dave:test.roost"}, token=tokens["alice"])
        assert invited.status == 200, invited.body
        builder = server.hs.sync_builder
        assert builder is not None
        return server, tokens, ChangeWaiter(server.hs.notifier, server.hs.clock,
                                            builder._user_rooms)

    async def _set_status(self, server: RunningServer, token: str, status: str) -> None:
        resp = await server.request(
            "PUT", V3 + f"/presence/{q('@alice:test.roost')}/status",
            {"presence": "online", "status_msg": status}, token=token)
        assert resp.status == 200, resp.body

    async def _watch_all(self, server: RunningServer, waiter: ChangeWaiter) -> dict[str, list[bool]]:
        """Each of bob, carol and dave waits as a long poll does."""
        builder = server.hs.sync_builder
        assert builder is not None
        fired: dict[str, list[bool]] = {}
        for name in ("bob", "carol", "dave"):
            await builder._user_rooms.rooms(f"@{name}:test.roost")  # held: armed at once
            fired[name] = []
            watch = waiter.watch(f"@{name}:test.roost", 60, fired[name].append, self.fail)
            self.addCleanup(watch.cancel)
            self.assertIsNotNone(watch._rooms)
        return fired

    async def test_presence_wakes_only_those_sharing_a_joined_room(self) -> None:
        server, tokens, waiter = await self._server()
        builder = server.hs.sync_builder
        assert builder is not None
        await builder._user_rooms.rooms("@alice:test.roost")  # alice's rooms are known here
        fired = await self._watch_all(server, waiter)
        await self._set_status(server, tokens["alice"], "here")
        self.assertEqual(fired, {"bob": [True], "carol": [], "dave": []})
        # And bob's sync does carry it, as nobody else's would.
        body = (await server.request("GET", V3 + "/sync", token=tokens["bob"])).body
        self.assertIn("@alice:test.roost",
                      [e["sender"] for e in body["presence"]["events"]])
        carol = (await server.request("GET", V3 + "/sync", token=tokens["carol"])).body
        self.assertNotIn("@alice:test.roost",
                         [e["sender"] for e in carol["presence"]["events"]])

    async def test_presence_of_a_user_whose_rooms_are_not_known_wakes_everyone(self) -> None:
        server, tokens, waiter = await self._server()
        builder = server.hs.sync_builder
        assert builder is not None
        await builder._user_rooms.rooms("@alice:test.roost")
        await server.request("POST", V3 + "/createRoom", {}, token=tokens["alice"])
        self.assertIsNone(builder._user_rooms.cached("@alice:test.roost"))  # dropped
        fired = await self._watch_all(server, waiter)
        await self._set_status(server, tokens["alice"], "here")
        self.assertEqual(fired, {"bob": [True], "carol": [True], "dave": [True]})

