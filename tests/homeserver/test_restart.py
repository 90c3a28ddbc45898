"""A restart keeps users, devices and sessions: tokens issued before it still work."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.client_api.test_login import password_login
from tests.client_api.test_rooms_http import Client, assert_error, bodies
from tests.server_harness import q, start_server

V3 = "/_matrix/client/v3"


class RestartTests(TestCase):
    async def test_users_devices_and_sessions_survive_a_restart(self) -> None:
        data_dir = self.mktemp()
        first = await start_server(self, data_dir=data_dir)
        reg = await first.register("alice", initial_device_display_name="laptop")
        login = await first.request("POST", V3 + "/login",
                                    password_login("alice", refresh_token=True))
        await first.stop()

        second = await start_server(self, dsn=first.hs.db.dsn, data_dir=data_dir)
        who = await second.request("GET", V3 + "/account/whoami", token=reg["access_token"])
        self.assertEqual((who.status, who.body.get("user_id")), (200, "@alice:test.roost"))
        devices = await second.request("GET", V3 + "/devices", token=reg["access_token"])
        self.assertEqual(len(devices.body["devices"]), 2)
        refreshed = await second.request("POST", V3 + "/refresh",
                                         {"refresh_token": login.body["refresh_token"]})
        self.assertEqual(refreshed.status, 200)
        again = await second.request("POST", V3 + "/login", password_login("alice"))
        self.assertEqual(again.status, 200)


class RetriedSendAfterRestartTests(TestCase):
    """A send's txn id outlives the process: the retry gets the first event, once."""

    async def _restarted(self, data_dir: str, first: Any, *clients: Client) -> list[Client]:
        await first.stop()
        second = await start_server(self, dsn=first.hs.db.dsn, data_dir=data_dir)
        return [Client(second, c.user_id, c.token, c.device_id) for c in clients]

    async def test_a_retry_batched_with_new_sends_returns_the_first_event(self) -> None:
        data_dir = self.mktemp()
        first = await start_server(self, data_dir=data_dir)
        reg = await first.register("alice")
        alice = Client(first, reg["user_id"], reg["access_token"], reg["device_id"])
        room = await alice.create_room()
        original = await alice.send(room, "once", txn="retried")

        (alice,) = await self._restarted(data_dir, first, alice)
        # Sent together, so that the retry shares a batch with the new sends.
        sends = [defer.ensureDeferred(alice.send(room, "once", txn="retried"))]
        sends += [defer.ensureDeferred(alice.send(room, f"new {i}", txn=f"n{i}")) for i in range(5)]
        ids = await defer.gatherResults(sends)

        self.assertEqual(ids[0], original)
        self.assertEqual(len(set(ids)), 6)
        chunk = (await alice.messages(room, dir="f", limit=100))["chunk"]
        self.assertEqual(sorted(bodies(chunk)), ["new 0", "new 1", "new 2", "new 3", "new 4", "once"])

    async def test_a_retry_the_room_now_refuses_still_gets_its_event(self) -> None:
        data_dir = self.mktemp()
        first = await start_server(self, data_dir=data_dir)
        regs = [await first.register(name) for name in ("alice", "bob")]
        alice, bob = (Client(first, r["user_id"], r["access_token"], r["device_id"]) for r in regs)
        room = await alice.create_room(preset="public_chat")
        await bob.ok("POST", f"/rooms/{q(room)}/join", {})
        original = await bob.send(room, "before the mute", txn="b1")
        levels = await alice.ok("GET", f"/rooms/{q(room)}/state/m.room.power_levels/")
        levels["events_default"] = 50
        await alice.put_state(room, "m.room.power_levels", levels)

        alice, bob = await self._restarted(data_dir, first, alice, bob)
        self.assertEqual(await bob.send(room, "before the mute", txn="b1"), original)
        refused = await bob.call("PUT", f"/rooms/{q(room)}/send/m.room.message/b2",
                                 {"msgtype": "m.text", "body": "after"})
        assert_error(self, refused, 403, "M_FORBIDDEN")
