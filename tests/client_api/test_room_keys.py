"""Key backup over real HTTP: versions, keys for all rooms / one room / one session,
etag and count, and the spec's rules for replacing a session's key."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.client_api.e2e_helpers import V3
from tests.server_harness import start_server

ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
ROOM = "!room:test.roost"


def key(index: int, forwarded: int = 0, verified: bool = False, data: str = "x") -> dict:
    return {"first_message_index": index, "forwarded_count": forwarded, "is_verified": verified,
            "session_data": {"ciphertext": data, "ephemeral": "e", "mac": "m"}}


class KeyBackupTests(TestCase):
    async def _backup(self, server):
        alice = await server.register("alice")
        token = alice["access_token"]
        made = await server.request("POST", V3 + "/room_keys/version",
                                    {"algorithm": ALGORITHM, "auth_data": {"public_key": "pk"}},
                                    token=token)
        self.assertEqual(made.status, 200, made.body)
        return token, made.body["version"]

    async def test_versions_create_read_update_delete_and_latest(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        token = alice["access_token"]
        none = await server.request("GET", V3 + "/room_keys/version", token=token)
        self.assertEqual((none.status, none.body["errcode"]), (404, "M_NOT_FOUND"))
        first = (await server.request("POST", V3 + "/room_keys/version",
                                      {"algorithm": ALGORITHM, "auth_data": {"a": 1}},
                                      token=token)).body["version"]
        second = (await server.request("POST", V3 + "/room_keys/version",
                                       {"algorithm": ALGORITHM, "auth_data": {"a": 2}},
                                       token=token)).body["version"]
        latest = await server.request("GET", V3 + "/room_keys/version", token=token)
        self.assertEqual(latest.body, {"algorithm": ALGORITHM, "auth_data": {"a": 2}, "count": 0,
                                       "etag": "0", "version": second})
        wrong_alg = await server.request("PUT", V3 + f"/room_keys/version/{second}",
                                         {"algorithm": "other", "auth_data": {}}, token=token)
        self.assertEqual((wrong_alg.status, wrong_alg.body["errcode"]), (400, "M_INVALID_PARAM"))
        upd = await server.request("PUT", V3 + f"/room_keys/version/{second}",
                                   {"algorithm": ALGORITHM, "auth_data": {"a": 3}}, token=token)
        self.assertEqual(upd.status, 200)
        got = await server.request("GET", V3 + f"/room_keys/version/{second}", token=token)
        self.assertEqual(got.body["auth_data"], {"a": 3})
        deleted = await server.request("DELETE", V3 + f"/room_keys/version/{second}", token=token)
        self.assertEqual(deleted.status, 200)
        latest = await server.request("GET", V3 + "/room_keys/version", token=token)
        self.assertEqual(latest.body["version"], first)
        third = (await server.request("POST", V3 + "/room_keys/version",
                                      {"algorithm": ALGORITHM, "auth_data": {}},
                                      token=token)).body["version"]
        self.assertNotIn(third, (first, second))
        bob = await server.register("bob")
        other = await server.request("GET", V3 + f"/room_keys/version/{first}",
                                     token=bob["access_token"])
        self.assertEqual(other.status, 404)

    async def test_keys_at_every_level_with_etag_and_count(self) -> None:
        server = await start_server(self)
        token, version = await self._backup(server)
        q = f"?version={version}"
        one = await server.request("PUT", V3 + f"/room_keys/keys/{ROOM}/s1{q}", key(0),
                                   token=token)
        self.assertEqual(one.body, {"etag": "1", "count": 1})
        room = await server.request("PUT", V3 + f"/room_keys/keys/{ROOM}{q}",
                                    {"sessions": {"s2": key(0), "s3": key(0)}}, token=token)
        self.assertEqual(room.body, {"etag": "2", "count": 3})
        every = await server.request("PUT", V3 + f"/room_keys/keys{q}",
                                     {"rooms": {"!other:test.roost": {"sessions": {"s4": key(1)}}}},
                                     token=token)
        self.assertEqual(every.body, {"etag": "3", "count": 4})
        got = await server.request("GET", V3 + f"/room_keys/keys{q}", token=token)
        self.assertEqual(set(got.body["rooms"][ROOM]["sessions"]), {"s1", "s2", "s3"})
        got_room = await server.request("GET", V3 + f"/room_keys/keys/{ROOM}{q}", token=token)
        self.assertEqual(set(got_room.body["sessions"]), {"s1", "s2", "s3"})
        empty = await server.request("GET", V3 + f"/room_keys/keys/!none:x{q}", token=token)
        self.assertEqual(empty.body, {"sessions": {}})
        session = await server.request("GET", V3 + f"/room_keys/keys/{ROOM}/s1{q}", token=token)
        self.assertEqual(session.body, key(0))
        missing = await server.request("GET", V3 + f"/room_keys/keys/{ROOM}/nope{q}", token=token)
        self.assertEqual(missing.status, 404)
        gone = await server.request("DELETE", V3 + f"/room_keys/keys/{ROOM}/s1{q}", token=token)
        self.assertEqual(gone.body, {"etag": "4", "count": 3})
        info = await server.request("GET", V3 + "/room_keys/version", token=token)
        self.assertEqual((info.body["etag"], info.body["count"]), ("4", 3))
        gone_room = await server.request("DELETE", V3 + f"/room_keys/keys/{ROOM}{q}", token=token)
        self.assertEqual(gone_room.body["count"], 1)

    async def test_a_session_key_is_replaced_only_by_a_better_one(self) -> None:
        server = await start_server(self)
        token, version = await self._backup(server)
        path = V3 + f"/room_keys/keys/{ROOM}/s{'?version=' + version}"
        await server.request("PUT", path, key(5, forwarded=2, data="first"), token=token)
        for worse in (key(6, data="later index"), key(5, forwarded=3, data="more forwarded")):
            resp = await server.request("PUT", path, worse, token=token)
            self.assertEqual(resp.body["etag"], "1")
        for better, data in ((key(5, forwarded=1, data="less forwarded"), "less forwarded"),
                             (key(2, forwarded=9, data="lower index"), "lower index"),
                             (key(9, forwarded=9, verified=True, data="verified"), "verified")):
            await server.request("PUT", path, better, token=token)
            stored = await server.request("GET", path, token=token)
            self.assertEqual(stored.body["session_data"]["ciphertext"], data)
        unverified = await server.request("PUT", path, key(0, data="unverified"), token=token)
        self.assertEqual(unverified.body["etag"], "4")

    async def test_wrong_version_and_bad_keys_change_nothing(self) -> None:
        server = await start_server(self)
        token, version = await self._backup(server)
        newer = (await server.request("POST", V3 + "/room_keys/version",
                                      {"algorithm": ALGORITHM, "auth_data": {}},
                                      token=token)).body["version"]
        old = await server.request("PUT", V3 + f"/room_keys/keys/{ROOM}/s?version={version}",
                                   key(0), token=token)
        self.assertEqual((old.status, old.body["errcode"], old.body["current_version"]),
                         (403, "M_WRONG_ROOM_KEYS_VERSION", newer))
        no_version = await server.request("PUT", V3 + f"/room_keys/keys/{ROOM}/s", key(0),
                                          token=token)
        self.assertEqual((no_version.status, no_version.body["errcode"]),
                         (400, "M_MISSING_PARAM"))
        for bad in ({**key(0), "first_message_index": -1}, {**key(0), "is_verified": "yes"},
                    {**key(0), "session_data": "x"}):
            resp = await server.request("PUT", V3 + f"/room_keys/keys/{ROOM}/s?version={newer}",
                                        bad, token=token)
            self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_PARAM"))
        info = await server.request("GET", V3 + "/room_keys/version", token=token)
        self.assertEqual((info.body["count"], info.body["etag"]), (0, "0"))
