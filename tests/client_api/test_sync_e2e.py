"""The end-to-end parts of /sync over real HTTP: to_device (kept until the next sync
acknowledges it), device_lists changed/left, one-time key counts, fallback key types,
/keys/changes, and the limits of /sendToDevice."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.client_api.e2e_helpers import V3, device_keys, one_time_keys
from tests.client_api.test_login import password_login
from tests.server_harness import q, start_server


async def sync(server, token, since=None, timeout=0):
    path = V3 + f"/sync?timeout={timeout}" + (f"&since={since}" if since else "")
    resp = await server.request("GET", path, token=token)
    assert resp.status == 200, resp.body
    return resp.body


class ToDeviceTests(TestCase):
    async def test_message_is_delivered_and_kept_until_the_next_sync_acknowledges_it(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        bob = await server.register("bob")
        first = await sync(server, bob["access_token"])
        self.assertEqual(first["to_device"], {"events": []})
        sent = await server.request("PUT", V3 + "/sendToDevice/m.test/t1", {"messages": {
            bob["user_id"]: {bob["device_id"]: {"n": 1}}}}, token=alice["access_token"])
        self.assertEqual(sent.status, 200)
        got = await sync(server, bob["access_token"], first["next_batch"])
        self.assertEqual(got["to_device"]["events"],
                         [{"sender": alice["user_id"], "type": "m.test", "content": {"n": 1}}])
        again = await sync(server, bob["access_token"], first["next_batch"])  # not acknowledged
        self.assertEqual(len(again["to_device"]["events"]), 1)
        acked = await sync(server, bob["access_token"], got["next_batch"])
        self.assertEqual(acked["to_device"]["events"], [])
        left = await server.hs.db.run("n", lambda t: t.query_one(
            "SELECT COUNT(*) FROM device_inbox"))
        self.assertEqual(left[0], 0)

    async def test_star_reaches_every_device_and_a_txn_id_is_idempotent(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        bob = await server.register("bob")
        phone = (await server.request("POST", V3 + "/login",
                                      password_login("bob", device_id="PHONE"))).body
        body = {"messages": {bob["user_id"]: {"*": {"hi": True}}}}
        for _ in range(2):
            await server.request("PUT", V3 + "/sendToDevice/m.test/same", body,
                                 token=alice["access_token"])
        for token in (bob["access_token"], phone["access_token"]):
            got = await sync(server, token)
            self.assertEqual([e["content"] for e in got["to_device"]["events"]], [{"hi": True}])

    async def test_a_waiting_sync_wakes_for_a_to_device_message(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        bob = await server.register("bob")
        first = await sync(server, bob["access_token"])
        waiting = defer.ensureDeferred(sync(server, bob["access_token"], first["next_batch"],
                                            timeout=30_000))
        await server.request("PUT", V3 + "/sendToDevice/m.test/t", {"messages": {
            bob["user_id"]: {bob["device_id"]: {"wake": "up"}}}}, token=alice["access_token"])
        got = await waiting
        self.assertEqual(got["to_device"]["events"][0]["content"], {"wake": "up"})

    async def test_oversized_or_too_many_messages_are_refused_and_nothing_is_sent(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        bob = await server.register("bob")
        big = {"messages": {bob["user_id"]: {bob["device_id"]: {"x": "y" * 70_000}}}}
        resp = await server.request("PUT", V3 + "/sendToDevice/m.test/big", big,
                                    token=alice["access_token"])
        self.assertEqual((resp.status, resp.body["errcode"]), (413, "M_TOO_LARGE"))
        many = {"messages": {bob["user_id"]: {f"D{i}": {} for i in range(1001)}}}
        resp = await server.request("PUT", V3 + "/sendToDevice/m.test/many", many,
                                    token=alice["access_token"])
        self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_PARAM"))
        for bad in ({}, {"messages": []}, {"messages": {"notauser": {}}},
                    {"messages": {bob["user_id"]: {"D": "str"}}}):
            resp = await server.request("PUT", V3 + "/sendToDevice/m.test/bad", bad,
                                        token=alice["access_token"])
            self.assertEqual(resp.status, 400, bad)
        got = await sync(server, bob["access_token"])
        self.assertEqual(got["to_device"]["events"], [])


class DeviceListSyncTests(TestCase):
    async def _room_with(self, server, alice, bob) -> str:
        room = (await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                     token=alice["access_token"])).body["room_id"]
        await server.request("POST", V3 + f"/join/{q(room)}", {}, token=bob["access_token"])
        return room

    async def test_changes_of_room_members_and_leaves_are_listed(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        bob = await server.register("bob")
        carol = await server.register("carol")
        room = await self._room_with(server, alice, bob)
        start = await sync(server, alice["access_token"])
        keys, signer = device_keys(bob["user_id"], bob["device_id"])
        await server.request("POST", V3 + "/keys/upload", {"device_keys": keys},
                             token=bob["access_token"])
        carol_keys, _ = device_keys(carol["user_id"], carol["device_id"])  # shares no room
        await server.request("POST", V3 + "/keys/upload", {"device_keys": carol_keys},
                             token=carol["access_token"])
        got = await sync(server, alice["access_token"], start["next_batch"])
        self.assertEqual(got["device_lists"], {"changed": [bob["user_id"]], "left": []})
        await server.request("POST", V3 + f"/rooms/{q(room)}/leave", {},
                             token=bob["access_token"])
        after = await sync(server, alice["access_token"], got["next_batch"])
        self.assertEqual(after["device_lists"], {"changed": [], "left": [bob["user_id"]]})
        changes = await server.request(
            "GET", V3 + f"/keys/changes?from={start['next_batch']}&to={after['next_batch']}",
            token=alice["access_token"])
        self.assertEqual(changes.body, {"changed": [], "left": [bob["user_id"]]})
        bad = await server.request("GET", V3 + "/keys/changes?from=nonsense&to=s1",
                                   token=alice["access_token"])
        self.assertEqual((bad.status, bad.body["errcode"]), (400, "M_INVALID_PARAM"))

    async def test_a_joining_user_is_listed_as_changed(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        bob = await server.register("bob")
        start = await sync(server, alice["access_token"])
        await self._room_with(server, alice, bob)
        got = await sync(server, alice["access_token"], start["next_batch"])
        self.assertIn(bob["user_id"], got["device_lists"]["changed"])

    async def test_one_time_key_counts_and_fallback_types_are_in_every_sync(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        keys, signer = device_keys(alice["user_id"], alice["device_id"])
        await server.request("POST", V3 + "/keys/upload", {
            "device_keys": keys, "one_time_keys": one_time_keys(signer, 4),
            "fallback_keys": {"signed_curve25519:fb": signer.sign({"key": "f", "fallback": True})},
        }, token=alice["access_token"])
        got = await sync(server, alice["access_token"])
        self.assertEqual(got["device_one_time_keys_count"], {"signed_curve25519": 4})
        self.assertEqual(got["device_unused_fallback_key_types"], ["signed_curve25519"])
        bob = await server.register("bob")
        claim = {"one_time_keys": {alice["user_id"]: {alice["device_id"]: "signed_curve25519"}}}
        for _ in range(5):  # four one-time keys, then the fallback key
            await server.request("POST", V3 + "/keys/claim", claim, token=bob["access_token"])
            now = await sync(server, alice["access_token"], got["next_batch"])
        self.assertEqual(now["device_one_time_keys_count"], {"signed_curve25519": 0})
        self.assertEqual(now["device_unused_fallback_key_types"], [])
