"""End-to-end keys between two Roost servers over real TLS on loopback: remote key query
and claim (one request per server), failures listed, to-device messages as
m.direct_to_device, device list updates with their prev_id chain and a resync on a gap."""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from roost.federation.device_edus import InboundDeviceEdus
from tests.client_api.e2e_helpers import device_keys, one_time_keys
from tests.federation.test_served import public_room, q
from tests.federation.two_servers import V3, FedNode, start_pair
from tests.federation.two_servers import eventually as _eventually


async def eventually(check):  # noqa: ANN001, ANN201
    """The harness's wait with a guard for a loaded machine (it is not a speed check)."""
    return await _eventually(check, timeout_s=90.0)


async def upload(node: FedNode, user: str, localpart: str, count: int = 3) -> dict:
    reg_device = (await node.request("GET", V3 + "/account/whoami", user=localpart))["device_id"]
    keys, signer = device_keys(user, reg_device)
    await node.request("POST", V3 + "/keys/upload",
                       {"device_keys": keys, "one_time_keys": one_time_keys(signer, count)},
                       user=localpart)
    return {"device": reg_device, "keys": keys, "signer": signer}


class RemoteKeyTests(TestCase):
    async def _pair_in_room(self) -> tuple[FedNode, FedNode, str, str, str]:
        a, b = await start_pair(self)
        alice = await a.register("alice")
        bob = await b.register("bob")
        room_id = await public_room(a, "alice")
        await b.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(a.name)}", {}, user="bob")
        return a, b, alice, bob, room_id

    async def test_query_and_claim_across_servers(self) -> None:
        a, b, alice, bob, _ = await self._pair_in_room()
        alice_keys = await upload(a, alice, "alice")
        got = await b.request("POST", V3 + "/keys/query", {"device_keys": {alice: []}},
                              user="bob")
        self.assertEqual(got["device_keys"][alice][alice_keys["device"]]["keys"],
                         alice_keys["keys"]["keys"])
        self.assertEqual(got["failures"], {})
        claim = await b.request("POST", V3 + "/keys/claim", {"one_time_keys": {
            alice: {alice_keys["device"]: "signed_curve25519"}}}, user="bob")
        self.assertEqual(len(claim["one_time_keys"][alice][alice_keys["device"]]), 1)
        counts = await a.request("POST", V3 + "/keys/upload", {}, user="alice")
        self.assertEqual(counts["one_time_key_counts"]["signed_curve25519"], 2)

    async def test_an_unreachable_server_is_listed_in_failures(self) -> None:
        a, b, alice, bob, _ = await self._pair_in_room()
        await upload(a, alice, "alice")
        await a.stop()
        got = await b.request("POST", V3 + "/keys/query",
                              {"device_keys": {"@x:127.0.0.1:1": []}, "timeout": 2000},
                              user="bob")
        self.assertIn("127.0.0.1:1", got["failures"])
        claim = await b.request("POST", V3 + "/keys/claim", {"one_time_keys": {
            "@x:127.0.0.1:1": {"D": "signed_curve25519"}}, "timeout": 2000}, user="bob")
        self.assertIn("127.0.0.1:1", claim["failures"])

    async def test_to_device_message_reaches_a_remote_device_once(self) -> None:
        a, b, alice, bob, _ = await self._pair_in_room()
        bob_device = (await b.request("GET", V3 + "/account/whoami", user="bob"))["device_id"]
        for _ in range(2):  # the same txn id twice: delivered once
            await a.request("PUT", V3 + "/sendToDevice/m.test/txn1",
                            {"messages": {bob: {"*": {"hello": "bob"}}}}, user="alice")
        assert b.server is not None
        inbox = b.server.hs.db

        async def delivered() -> list:
            return await inbox.run("inbox", lambda t: t.query(
                "SELECT device_id, message_json FROM device_inbox WHERE user_id = %s", (bob,)))

        rows = await eventually(delivered)
        self.assertEqual(len(rows), 1)
        # EDUs from one origin handled concurrently still land in the order they came.
        edus = _inbound_handler(b)
        await defer.gatherResults([defer.ensureDeferred(edus(a.name, "m.direct_to_device", {
            "sender": alice, "type": "m.test", "message_id": f"order{i}",
            "messages": {bob: {bob_device: {"n": i}}}})) for i in range(5)])
        ordered = await inbox.run("order", lambda t: t.query(
            "SELECT message_json FROM device_inbox WHERE user_id = %s AND message_json"
            " LIKE %s ORDER BY stream_id", (bob, '%"n":%')))
        self.assertEqual([json.loads(r[0])["content"]["n"] for r in ordered], list(range(5)))
        self.assertEqual(rows[0][0], bob_device)
        self.assertIn('"hello":"bob"', rows[0][1])

    async def test_device_list_updates_follow_the_chain_and_a_gap_resyncs(self) -> None:
        a, b, alice, bob, _ = await self._pair_in_room()
        await upload(a, alice, "alice")
        await b.request("POST", V3 + "/keys/query", {"device_keys": {alice: []}}, user="bob")
        assert a.server is not None and b.server is not None
        # A second device of alice's: its keys reach bob's server as an m.device_list_update.
        login = await a.server.request("POST", V3 + "/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "hunter2-pw", "device_id": "SECOND"})
        a.tokens["alice2"] = login.body["access_token"]
        second = device_keys(alice, "SECOND")[0]
        await a.request("POST", V3 + "/keys/upload", {"device_keys": second}, user="alice2")

        async def cached_devices() -> set:
            found = await b.server.hs.db.run("cache", lambda t: t.query_one(
                "SELECT devices FROM device_lists_remote WHERE user_id = %s", (alice,)))
            return found and "SECOND" in found[0] and found[0]

        await eventually(cached_devices)
        got = await b.request("POST", V3 + "/keys/query", {"device_keys": {alice: []}},
                              user="bob")
        self.assertIn("SECOND", got["device_keys"][alice])
        # An update whose prev_id we never saw: the device list is fetched again.
        edus = _inbound_handler(b)
        await b.server.hs.db.run("forget", lambda t: t.execute(
            "UPDATE device_lists_remote SET devices = '{\"devices\": {}}' WHERE user_id = %s",
            (alice,)))
        await edus(a.name, "m.device_list_update", {
            "user_id": alice, "device_id": "GHOST", "stream_id": 10_000, "prev_id": [9_999],
            "deleted": False, "keys": {"user_id": alice}})
        after = await b.request("POST", V3 + "/keys/query", {"device_keys": {alice: []}},
                                user="bob")
        self.assertEqual(set(after["device_keys"][alice]), {
            (await a.request("GET", V3 + "/account/whoami", user="alice"))["device_id"], "SECOND"})

    async def test_cross_signing_keys_and_device_deletions_reach_the_other_server(self) -> None:
        from tests.client_api.e2e_helpers import cross_signing_key

        a, b, alice, bob, _ = await self._pair_in_room()
        await upload(a, alice, "alice")
        assert a.server is not None and b.server is not None
        login = await a.server.request("POST", V3 + "/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "hunter2-pw", "device_id": "SECOND"})
        a.tokens["alice2"] = login.body["access_token"]
        await a.request("POST", V3 + "/keys/upload",
                        {"device_keys": device_keys(alice, "SECOND")[0]}, user="alice2")
        await b.request("POST", V3 + "/keys/query", {"device_keys": {alice: []}}, user="bob")
        master, signer = cross_signing_key(alice, "master")
        ssk, _ = cross_signing_key(alice, "self_signing", signer)
        await a.request("POST", V3 + "/keys/device_signing/upload",
                        {"master_key": master, "self_signing_key": ssk}, user="alice")

        async def bob_sees(check) -> bool:
            got = await b.request("POST", V3 + "/keys/query", {"device_keys": {alice: []}},
                                  user="bob")
            return check(got)

        await eventually(lambda: bob_sees(
            lambda got: got.get("master_keys", {}).get(alice, {}).get("keys") == master["keys"]))
        await a.request("POST", V3 + "/logout", {}, user="alice2")
        await eventually(lambda: bob_sees(lambda got: "SECOND" not in got["device_keys"][alice]))


    async def test_bad_federation_input_is_refused_or_ignored(self) -> None:
        from roost.federation.transport.client import HttpResponseError

        a, b, alice, bob, _ = await self._pair_in_room()
        assert a.server is not None and a.server.hs.federation is not None
        client = a.server.hs.federation.client
        for path, body in (("/user/keys/query", {"device_keys": []}),
                           ("/user/keys/claim", {"one_time_keys": {bob: {"D": 1}}}),
                           ("/user/keys/query", {})):
            with self.assertRaises(HttpResponseError) as caught:
                await client.post_json(b.name, "/_matrix/federation/v1" + path, body)
            self.assertEqual(caught.exception.status, 400, path)
        with self.assertRaises(HttpResponseError) as caught:
            await client.get_json(b.name, f"/_matrix/federation/v1/user/devices/{q(alice)}")
        self.assertEqual(caught.exception.status, 403)
        devices = await client.get_json(b.name, f"/_matrix/federation/v1/user/devices/{q(bob)}")
        self.assertEqual((devices["user_id"], devices["devices"]), (bob, []))
        # EDUs naming users of another server than the origin change nothing.
        edus = _inbound_handler(b)
        await edus("evil.example", "m.direct_to_device", {
            "sender": alice, "type": "m.test", "message_id": "m1",
            "messages": {bob: {"*": {"forged": True}}}})
        await edus("evil.example", "m.device_list_update", {
            "user_id": alice, "device_id": "X", "stream_id": 1, "prev_id": [], "keys": {}})
        assert b.server is not None
        counts = await b.server.hs.db.run("n", lambda t: t.query_one(
            "SELECT (SELECT COUNT(*) FROM device_inbox), (SELECT COUNT(*) FROM"
            " device_lists_stream WHERE user_id = %s)", (alice,)))
        self.assertEqual(counts, (0, 0))


def _inbound_handler(node: FedNode) -> InboundDeviceEdus:
    """The EDU handler the running server's /send uses (found through its router)."""
    assert node.server is not None and node.server.hs.federation is not None
    route, _, _ = node.server.hs.federation.router.match(
        "PUT", "/_matrix/federation/v1/send/x")
    handler = route.handler.__self__._edus.e2e  # type: ignore[union-attr]
    assert isinstance(handler, InboundDeviceEdus)
    return handler

class RemoteTrackingTests(TestCase):
    async def test_a_remote_users_devices_are_dropped_when_no_room_is_shared(self) -> None:
        a, b = await start_pair(self)
        alice = await a.register("alice")
        await b.register("bob")
        room_id = await public_room(a, "alice")
        await b.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(a.name)}", {}, user="bob")
        await upload(a, alice, "alice")
        await b.request("POST", V3 + "/keys/query", {"device_keys": {alice: []}}, user="bob")
        assert b.server is not None

        async def cached() -> bool:
            row = await b.server.hs.db.run("cache", lambda t: t.query_one(
                "SELECT 1 FROM device_lists_remote WHERE user_id = %s", (alice,)))
            return row is not None

        self.assertTrue(await cached())
        await a.request("POST", f"{V3}/rooms/{q(room_id)}/leave", {}, user="alice")
        await eventually(lambda: _not(cached))


async def _not(check) -> bool:
    return not await check()
