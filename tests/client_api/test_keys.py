"""/keys/upload, /keys/query, /keys/claim over real HTTP on real PostgreSQL: checks, and
a one-time key handed out exactly once under concurrent claims."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.client_api.e2e_helpers import V3, device_keys, one_time_keys
from tests.client_api.test_login import password_login
from tests.server_harness import start_server


class KeyUploadTests(TestCase):
    async def _user(self, server, name="alice"):
        reg = await server.register(name, initial_device_display_name=f"{name}'s laptop")
        return reg["user_id"], reg["device_id"], reg["access_token"]

    async def test_device_keys_uploaded_are_served_with_the_display_name(self) -> None:
        server = await start_server(self)
        user, device, token = await self._user(server)
        keys, _ = device_keys(user, device)
        up = await server.request("POST", V3 + "/keys/upload", {"device_keys": keys}, token=token)
        self.assertEqual(up.status, 200, up.body)
        self.assertEqual(up.body["one_time_key_counts"], {"signed_curve25519": 0})
        _, _, bob = await self._user(server, "bob")
        got = await server.request("POST", V3 + "/keys/query", {"device_keys": {user: []}},
                                   token=bob)
        self.assertEqual(got.status, 200, got.body)
        served = got.body["device_keys"][user][device]
        self.assertEqual(served["keys"], keys["keys"])
        self.assertEqual(served["signatures"], keys["signatures"])
        self.assertEqual(served["unsigned"]["device_display_name"], "alice's laptop")
        self.assertEqual(got.body["failures"], {})

    async def test_keys_of_another_user_or_device_are_refused(self) -> None:
        server = await start_server(self)
        user, device, token = await self._user(server)
        for keys in (device_keys("@mallory:test.roost", device)[0],
                     device_keys(user, "OTHERDEVICE")[0]):
            resp = await server.request("POST", V3 + "/keys/upload", {"device_keys": keys},
                                        token=token)
            self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_PARAM"))
        got = await server.request("POST", V3 + "/keys/query", {"device_keys": {user: []}},
                                   token=token)
        self.assertEqual(got.body["device_keys"][user], {})

    async def test_unsigned_and_mis_signed_device_keys_are_refused(self) -> None:
        server = await start_server(self)
        user, device, token = await self._user(server)
        keys, _ = device_keys(user, device)
        unsigned = {k: v for k, v in keys.items() if k != "signatures"}
        tampered = {**keys, "algorithms": ["m.megolm.v1.aes-sha2"]}
        other_key, _ = device_keys(user, device)
        wrong_signer = {**keys, "signatures": other_key["signatures"]}
        for bad in (unsigned, tampered, wrong_signer):
            resp = await server.request("POST", V3 + "/keys/upload", {"device_keys": bad},
                                        token=token)
            self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_PARAM"))
        got = await server.request("POST", V3 + "/keys/query", {"device_keys": {user: []}},
                                   token=token)
        self.assertEqual(got.body["device_keys"][user], {})

    async def test_identity_keys_cannot_be_replaced(self) -> None:
        server = await start_server(self)
        user, device, token = await self._user(server)
        first, _ = device_keys(user, device)
        await server.request("POST", V3 + "/keys/upload", {"device_keys": first}, token=token)
        again = await server.request("POST", V3 + "/keys/upload", {"device_keys": first},
                                     token=token)
        self.assertEqual(again.status, 200)
        second, _ = device_keys(user, device)
        resp = await server.request("POST", V3 + "/keys/upload", {"device_keys": second},
                                    token=token)
        self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_PARAM"))
        got = await server.request("POST", V3 + "/keys/query", {"device_keys": {user: []}},
                                   token=token)
        self.assertEqual(got.body["device_keys"][user][device]["keys"], first["keys"])

    async def test_bad_bodies_get_matrix_errors(self) -> None:
        server = await start_server(self)
        _, _, token = await self._user(server)
        cases = [
            ("/keys/upload", {"one_time_keys": {"nocolon": {"key": "x"}}}, "M_INVALID_PARAM"),
            ("/keys/upload", {"one_time_keys": []}, "M_BAD_JSON"),
            ("/keys/upload", {"fallback_keys": {"a:1": "x", "a:2": "y"}}, "M_INVALID_PARAM"),
            ("/keys/query", {}, "M_MISSING_PARAM"),
            ("/keys/query", {"device_keys": {"@a:b": "x"}}, "M_BAD_JSON"),
            ("/keys/query", {"device_keys": {}, "timeout": -1}, "M_INVALID_PARAM"),
            ("/keys/claim", {"one_time_keys": {"@a:b": {"D": 5}}}, "M_BAD_JSON"),
        ]
        for path, body, errcode in cases:
            resp = await server.request("POST", V3 + path, body, token=token)
            self.assertEqual((resp.status, resp.body.get("errcode")), (400, errcode), (path, body))

    async def test_one_time_keys_counted_and_a_reused_id_with_another_key_refused(self) -> None:
        server = await start_server(self)
        user, device, token = await self._user(server)
        keys, signer = device_keys(user, device)
        up = await server.request("POST", V3 + "/keys/upload",
                                  {"device_keys": keys, "one_time_keys": one_time_keys(signer, 5)},
                                  token=token)
        self.assertEqual(up.body["one_time_key_counts"], {"signed_curve25519": 5})
        clash = {"signed_curve25519:k0": signer.sign({"key": "different"})}
        resp = await server.request("POST", V3 + "/keys/upload", {"one_time_keys": clash},
                                    token=token)
        self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_PARAM"))
        same = await server.request("POST", V3 + "/keys/upload",
                                    {"one_time_keys": one_time_keys(signer, 1)}, token=token)
        self.assertEqual(same.body["one_time_key_counts"], {"signed_curve25519": 5})


class KeyClaimTests(TestCase):
    async def test_claim_takes_a_key_then_the_fallback_key(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        bob = await server.register("bob")
        user, device = alice["user_id"], alice["device_id"]
        keys, signer = device_keys(user, device)
        fallback = {"signed_curve25519:fb": signer.sign({"key": "fallback", "fallback": True})}
        await server.request("POST", V3 + "/keys/upload",
                             {"device_keys": keys, "one_time_keys": one_time_keys(signer, 1),
                              "fallback_keys": fallback}, token=alice["access_token"])
        body = {"one_time_keys": {user: {device: "signed_curve25519"}}}
        first = await server.request("POST", V3 + "/keys/claim", body, token=bob["access_token"])
        self.assertEqual(list(first.body["one_time_keys"][user][device]),
                         ["signed_curve25519:k0"])
        sync = await server.request("GET", V3 + "/sync", token=alice["access_token"])
        self.assertEqual(sync.body.get("device_unused_fallback_key_types", ["signed_curve25519"]),
                         ["signed_curve25519"])
        second = await server.request("POST", V3 + "/keys/claim", body, token=bob["access_token"])
        self.assertEqual(second.body["one_time_keys"][user][device], fallback)
        third = await server.request("POST", V3 + "/keys/claim", body, token=bob["access_token"])
        self.assertEqual(third.body["one_time_keys"][user][device], fallback)
        self.assertEqual(third.body["failures"], {})

    async def test_concurrent_claims_hand_out_each_key_exactly_once(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        user, device = alice["user_id"], alice["device_id"]
        keys, signer = device_keys(user, device)
        await server.request("POST", V3 + "/keys/upload",
                             {"device_keys": keys, "one_time_keys": one_time_keys(signer, 10)},
                             token=alice["access_token"])
        claimers = [await server.register(f"bob{i}") for i in range(4)]
        body = {"one_time_keys": {user: {device: "signed_curve25519"}}}
        answers = await defer.gatherResults([
            defer.ensureDeferred(server.request("POST", V3 + "/keys/claim", body,
                                                token=claimers[i % 4]["access_token"]))
            for i in range(16)])
        claimed = [key_id for a in answers
                   for key_id in a.body["one_time_keys"].get(user, {}).get(device, {})]
        self.assertEqual(len(claimed), 10)
        self.assertEqual(sorted(claimed), sorted(f"signed_curve25519:k{i}" for i in range(10)))
        counts = await server.request("POST", V3 + "/keys/upload", {}, token=alice["access_token"])
        self.assertEqual(counts.body["one_time_key_counts"], {"signed_curve25519": 0})


class DeviceDeletionTests(TestCase):
    async def test_deleting_a_device_removes_its_keys_and_announces_the_change(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        user = alice["user_id"]
        phone = (await server.request("POST", V3 + "/login",
                                      password_login("alice", device_id="PHONE"))).body
        keys, signer = device_keys(user, "PHONE")
        await server.request("POST", V3 + "/keys/upload",
                             {"device_keys": keys, "one_time_keys": one_time_keys(signer, 3)},
                             token=phone["access_token"])
        before = await server.hs.db.run("pos", lambda t: t.query_one(
            "SELECT COALESCE(MAX(stream_id), 0) FROM device_lists_stream"))
        logout = await server.request("POST", V3 + "/logout", {}, token=phone["access_token"])
        self.assertEqual(logout.status, 200)
        got = await server.request("POST", V3 + "/keys/query", {"device_keys": {user: []}},
                                   token=alice["access_token"])
        self.assertEqual(got.body["device_keys"][user], {})
        left = await server.hs.db.run("left", lambda t: t.query(
            "SELECT COUNT(*) FROM e2e_one_time_keys WHERE device_id = 'PHONE'"))
        self.assertEqual(left[0][0], 0)
        async def rows() -> list:
            return await server.hs.db.run("rows", lambda t: t.query(
                "SELECT user_id, device_id FROM device_lists_stream WHERE stream_id > %s",
                (before[0],)))

        from tests.federation.two_servers import eventually
        self.assertEqual(await eventually(rows), [(user, "PHONE")])  # announced after commit

    async def test_deactivation_removes_every_key_and_announces_the_devices(self) -> None:
        from tests.client_api.e2e_helpers import cross_signing_key

        server = await start_server(self)
        alice = await server.register("alice")
        bob = await server.register("bob")
        user, device = alice["user_id"], alice["device_id"]
        keys, _ = device_keys(user, device)
        await server.request("POST", V3 + "/keys/upload", {"device_keys": keys},
                             token=alice["access_token"])
        master, _ = cross_signing_key(user, "master")
        await server.request("POST", V3 + "/keys/device_signing/upload", {"master_key": master},
                             token=alice["access_token"])
        before = await server.hs.db.run("pos", lambda t: t.query_one(
            "SELECT COALESCE(MAX(stream_id), 0) FROM device_lists_stream"))
        auth = {"type": "m.login.password", "password": "hunter2-pw",
                "identifier": {"type": "m.id.user", "user": "alice"}}
        gone = await server.request("POST", V3 + "/account/deactivate", {"auth": auth},
                                    token=alice["access_token"])
        self.assertEqual(gone.status, 200, gone.body)
        got = await server.request("POST", V3 + "/keys/query", {"device_keys": {user: []}},
                                   token=bob["access_token"])
        self.assertEqual((got.body["device_keys"][user], got.body["master_keys"]), ({}, {}))
        rows = await server.hs.db.run("rows", lambda t: t.query(
            "SELECT device_id FROM device_lists_stream WHERE stream_id > %s AND user_id = %s"
            " ORDER BY device_id", (before[0], user)))
        self.assertEqual([r[0] for r in rows], ["", device])

    async def test_renaming_a_device_is_announced_once(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        token, device = alice["access_token"], alice["device_id"]
        before = await server.hs.db.run("pos", lambda t: t.query_one(
            "SELECT COALESCE(MAX(stream_id), 0) FROM device_lists_stream"))
        for _ in range(2):  # the second rename changes nothing
            resp = await server.request("PUT", V3 + f"/devices/{device}",
                                        {"display_name": "new name"}, token=token)
            self.assertEqual(resp.status, 200)

        async def rows() -> list:
            return await server.hs.db.run("rows", lambda t: t.query(
                "SELECT device_id FROM device_lists_stream WHERE stream_id > %s", (before[0],)))

        from tests.federation.two_servers import eventually
        self.assertEqual(await eventually(rows), [(device,)])
        missing = await server.request("PUT", V3 + "/devices/NOPE", {"display_name": "x"},
                                       token=token)
        self.assertEqual(missing.status, 404)
