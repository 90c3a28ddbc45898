"""Cross-signing keys and signatures over real HTTP: checks, UI auth on replacement,
visibility of user-signing keys and of signatures."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.client_api.e2e_helpers import V3, cross_signing_key, device_keys
from tests.server_harness import start_server


def password_auth(user: str, session: str) -> dict:
    return {"type": "m.login.password", "password": "hunter2-pw", "session": session,
            "identifier": {"type": "m.id.user", "user": user}}


class CrossSigningTests(TestCase):
    async def _setup(self, server, name="alice"):
        reg = await server.register(name)
        user, device, token = reg["user_id"], reg["device_id"], reg["access_token"]
        keys, device_signer = device_keys(user, device)
        await server.request("POST", V3 + "/keys/upload", {"device_keys": keys}, token=token)
        master, master_signer = cross_signing_key(user, "master")
        ssk, ssk_signer = cross_signing_key(user, "self_signing", master_signer)
        usk, usk_signer = cross_signing_key(user, "user_signing", master_signer)
        return {"user": user, "device": device, "token": token, "keys": keys,
                "device_signer": device_signer, "master": master, "master_signer": master_signer,
                "ssk": ssk, "ssk_signer": ssk_signer, "usk": usk, "usk_signer": usk_signer}

    async def _upload(self, server, a, body=None):
        body = body or {"master_key": a["master"], "self_signing_key": a["ssk"],
                        "user_signing_key": a["usk"]}
        return await server.request("POST", V3 + "/keys/device_signing/upload", body,
                                    token=a["token"])

    async def test_first_upload_needs_no_auth_and_keys_are_served(self) -> None:
        server = await start_server(self)
        a = await self._setup(server)
        up = await self._upload(server, a)
        self.assertEqual(up.status, 200, up.body)
        mine = await server.request("POST", V3 + "/keys/query",
                                    {"device_keys": {a["user"]: []}}, token=a["token"])
        self.assertEqual(mine.body["master_keys"][a["user"]]["keys"], a["master"]["keys"])
        self.assertEqual(mine.body["self_signing_keys"][a["user"]]["keys"], a["ssk"]["keys"])
        self.assertEqual(mine.body["user_signing_keys"][a["user"]]["keys"], a["usk"]["keys"])
        bob = await server.register("bob")
        theirs = await server.request("POST", V3 + "/keys/query",
                                      {"device_keys": {a["user"]: []}}, token=bob["access_token"])
        self.assertIn(a["user"], theirs.body["master_keys"])
        self.assertIn(a["user"], theirs.body["self_signing_keys"])
        self.assertNotIn(a["user"], theirs.body.get("user_signing_keys", {}))

    async def test_replacing_keys_needs_the_password_and_the_same_keys_do_not(self) -> None:
        server = await start_server(self)
        a = await self._setup(server)
        await self._upload(server, a)
        same = await self._upload(server, a)
        self.assertEqual(same.status, 200)
        new_master, new_signer = cross_signing_key(a["user"], "master")
        body = {"master_key": new_master,
                "self_signing_key": cross_signing_key(a["user"], "self_signing", new_signer)[0]}
        challenge = await self._upload(server, a, body)
        self.assertEqual(challenge.status, 401)
        kept = await server.request("POST", V3 + "/keys/query",
                                    {"device_keys": {a["user"]: []}}, token=a["token"])
        self.assertEqual(kept.body["master_keys"][a["user"]]["keys"], a["master"]["keys"])
        done = await self._upload(server, a, {
            **body, "auth": password_auth("alice", challenge.body["session"])})
        self.assertEqual(done.status, 200, done.body)
        now = await server.request("POST", V3 + "/keys/query",
                                   {"device_keys": {a["user"]: []}}, token=a["token"])
        self.assertEqual(now.body["master_keys"][a["user"]]["keys"], new_master["keys"])

    async def test_keys_not_signed_by_the_master_key_are_refused(self) -> None:
        server = await start_server(self)
        a = await self._setup(server)
        stray, _ = cross_signing_key(a["user"], "self_signing")  # unsigned
        resp = await self._upload(server, a, {"master_key": a["master"], "self_signing_key": stray})
        self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_SIGNATURE"))
        wrong_owner, _ = cross_signing_key("@bob:test.roost", "master")
        resp = await self._upload(server, a, {"master_key": wrong_owner})
        self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_PARAM"))
        query = await server.request("POST", V3 + "/keys/query",
                                     {"device_keys": {a["user"]: []}}, token=a["token"])
        self.assertEqual(query.body["master_keys"], {})

    async def test_signatures_are_verified_and_stored(self) -> None:
        server = await start_server(self)
        a = await self._setup(server)
        await self._upload(server, a)
        b = await self._setup(server, "bob")
        await self._upload(server, b)
        device = a["ssk_signer"].sign(dict(a["keys"]))
        bob_master = a["usk_signer"].sign(dict(b["master"]))
        forged = a["device_signer"].sign(dict(b["master"]))  # not the user-signing key
        resp = await server.request("POST", V3 + "/keys/signatures/upload", {
            a["user"]: {a["device"]: device}, b["user"]: {b["master_signer"].public: bob_master},
        }, token=a["token"])
        self.assertEqual((resp.status, resp.body["failures"]), (200, {}))
        bad = await server.request("POST", V3 + "/keys/signatures/upload", {
            b["user"]: {b["master_signer"].public: {**forged, "signatures": {
                a["user"]: {a["usk_signer"].key_id: forged["signatures"][a["user"]][
                    a["device_signer"].key_id]}}}}}, token=a["token"])
        self.assertEqual(bad.body["failures"][b["user"]][b["master_signer"].public]["errcode"],
                         "M_INVALID_SIGNATURE")
        seen_by_bob = await server.request("POST", V3 + "/keys/query",
                                           {"device_keys": {a["user"]: []}}, token=b["token"])
        sigs = seen_by_bob.body["device_keys"][a["user"]][a["device"]]["signatures"][a["user"]]
        self.assertIn(a["ssk_signer"].key_id, sigs)
        by_alice = await server.request("POST", V3 + "/keys/query",
                                        {"device_keys": {b["user"]: []}}, token=a["token"])
        self.assertIn(a["usk_signer"].key_id,
                      by_alice.body["master_keys"][b["user"]]["signatures"][a["user"]])
        by_bob = await server.request("POST", V3 + "/keys/query",
                                      {"device_keys": {b["user"]: []}}, token=b["token"])
        self.assertNotIn(a["user"], by_bob.body["master_keys"][b["user"]].get("signatures", {}))
