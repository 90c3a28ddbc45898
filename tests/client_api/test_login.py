"""Login, refresh, logout and token expiry and revocation, over real HTTP.

Token lifetimes follow a fake `Clock` handed to the homeserver, so expiry is
tested without sleeping.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.server_harness import start_server

V3 = "/_matrix/client/v3"


def password_login(user: str, password: str = "hunter2-pw", **extra: object) -> dict:
    return {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
            "password": password, **extra}


def fake_clock() -> Clock:
    clock = Clock()
    clock.advance(1_800_000_000)
    return clock


class LoginTests(TestCase):
    async def test_get_login_lists_password_flow(self) -> None:
        server = await start_server(self)
        resp = await server.request("GET", V3 + "/login")
        self.assertEqual(resp.body, {"flows": [{"type": "m.login.password"},
                                               {"type": "m.login.token",
                                                "get_login_token": True}]})

    async def test_login_by_localpart_and_by_full_user_id(self) -> None:
        server = await start_server(self)
        await server.register("alice")
        for name in ("alice", "@alice:test.roost", "ALICE"):
            resp = await server.request("POST", V3 + "/login", password_login(name))
            self.assertEqual(resp.status, 200, (name, resp.body))
            self.assertEqual(resp.body["user_id"], "@alice:test.roost")

    async def test_legacy_user_field_is_accepted(self) -> None:
        server = await start_server(self)
        await server.register("alice")
        body = {"type": "m.login.password", "user": "alice", "password": "hunter2-pw"}
        resp = await server.request("POST", V3 + "/login", body)
        self.assertEqual(resp.status, 200)

    async def test_wrong_password_and_unknown_user_are_forbidden(self) -> None:
        server = await start_server(self)
        await server.register("alice")
        for body in (password_login("alice", "nope"), password_login("nobody")):
            resp = await server.request("POST", V3 + "/login", body)
            self.assertEqual((resp.status, resp.body["errcode"]), (403, "M_FORBIDDEN"))

    async def test_bad_login_bodies(self) -> None:
        server = await start_server(self)
        cases = [
            (b"not json", 400, "M_NOT_JSON"),
            (b"[1, 2]", 400, "M_BAD_JSON"),
            (b'{"type": "m.login.sso", "token": "x"}', 400, "M_UNKNOWN"),
            (b'{"type": "m.login.token", "token": "x"}', 403, "M_FORBIDDEN"),
            (b'{"type": "m.login.password", "password": "x"}', 400, "M_MISSING_PARAM"),
            (b'{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "a"}}',
             400, "M_MISSING_PARAM"),
            (b'{"type": "m.login.password", "identifier": "alice", "password": "x"}',
             400, "M_BAD_JSON"),
            (b'{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "a"},'
             b' "password": 5}', 400, "M_BAD_JSON"),
        ]
        for raw, status, errcode in cases:
            resp = await server.request("POST", V3 + "/login", raw=raw)
            self.assertEqual((resp.status, resp.body["errcode"]), (status, errcode), raw)

    async def test_login_without_refresh_gets_a_token_that_does_not_expire(self) -> None:
        clock = fake_clock()
        server = await start_server(self, clock=clock)
        await server.register("alice")
        resp = await server.request("POST", V3 + "/login", password_login("alice"))
        self.assertNotIn("refresh_token", resp.body)
        self.assertNotIn("expires_in_ms", resp.body)
        clock.advance(365 * 86400)
        who = await server.request("GET", V3 + "/account/whoami", token=resp.body["access_token"])
        self.assertEqual(who.status, 200)

    async def test_expired_access_token_is_soft_logout_and_refresh_renews_it(self) -> None:
        clock = fake_clock()
        server = await start_server(self, clock=clock, tokens={"access_token_lifetime": "15m"})
        await server.register("alice")
        login = await server.request("POST", V3 + "/login",
                                     password_login("alice", refresh_token=True))
        self.assertEqual(login.body["expires_in_ms"], 15 * 60_000)
        clock.advance(15 * 60 - 1)
        ok = await server.request("GET", V3 + "/account/whoami", token=login.body["access_token"])
        self.assertEqual(ok.status, 200)
        clock.advance(2)
        expired = await server.request("GET", V3 + "/account/whoami",
                                       token=login.body["access_token"])
        self.assertEqual((expired.status, expired.body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
        self.assertTrue(expired.body["soft_logout"])
        refreshed = await server.request("POST", V3 + "/refresh",
                                         {"refresh_token": login.body["refresh_token"]})
        self.assertEqual(refreshed.status, 200, refreshed.body)
        self.assertNotEqual(refreshed.body["refresh_token"], login.body["refresh_token"])
        who = await server.request("GET", V3 + "/account/whoami",
                                   token=refreshed.body["access_token"])
        self.assertEqual(who.body["device_id"], login.body["device_id"])

    async def test_refresh_token_used_twice_revokes_the_session(self) -> None:
        server = await start_server(self)
        await server.register("alice")
        login = await server.request("POST", V3 + "/login",
                                     password_login("alice", refresh_token=True))
        first = await server.request("POST", V3 + "/refresh",
                                     {"refresh_token": login.body["refresh_token"]})
        self.assertEqual(first.status, 200)
        reuse = await server.request("POST", V3 + "/refresh",
                                     {"refresh_token": login.body["refresh_token"]})
        self.assertEqual((reuse.status, reuse.body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
        # The whole session is gone: the rotated tokens are dead too.
        who = await server.request("GET", V3 + "/account/whoami", token=first.body["access_token"])
        self.assertEqual(who.status, 401)
        again = await server.request("POST", V3 + "/refresh",
                                     {"refresh_token": first.body["refresh_token"]})
        self.assertEqual(again.status, 401)

    async def test_expired_refresh_token_is_refused(self) -> None:
        clock = fake_clock()
        server = await start_server(self, clock=clock, tokens={"refresh_token_lifetime": "1d"})
        await server.register("alice")
        login = await server.request("POST", V3 + "/login",
                                     password_login("alice", refresh_token=True))
        clock.advance(86400 + 1)
        resp = await server.request("POST", V3 + "/refresh",
                                    {"refresh_token": login.body["refresh_token"]})
        self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_UNKNOWN_TOKEN"))

    async def test_garbage_refresh_token_is_unknown(self) -> None:
        server = await start_server(self)
        for token in ("junk", "rt.a.0.b", "rt.x.y.z"):
            resp = await server.request("POST", V3 + "/refresh", {"refresh_token": token})
            self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
        resp = await server.request("POST", V3 + "/refresh", {})
        self.assertEqual(resp.body["errcode"], "M_MISSING_PARAM")

    async def test_logout_revokes_at_once_and_deletes_the_device(self) -> None:
        server = await start_server(self)
        reg = await server.register("alice")
        token = reg["access_token"]
        other = await server.request("POST", V3 + "/login", password_login("alice"))
        out = await server.request("POST", V3 + "/logout", {}, token=token)
        self.assertEqual(out.status, 200)
        for path in ("/account/whoami", "/devices"):
            resp = await server.request("GET", V3 + path, token=token)
            self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
            self.assertFalse(resp.body["soft_logout"])
        devices = await server.request("GET", V3 + "/devices", token=other.body["access_token"])
        self.assertEqual([d["device_id"] for d in devices.body["devices"]],
                         [other.body["device_id"]])

    async def test_logout_all_revokes_every_session(self) -> None:
        server = await start_server(self)
        await server.register("alice")
        tokens = []
        for _ in range(3):
            resp = await server.request("POST", V3 + "/login", password_login("alice"))
            tokens.append(resp.body["access_token"])
        out = await server.request("POST", V3 + "/logout/all", {}, token=tokens[0])
        self.assertEqual(out.status, 200)
        for token in tokens:
            resp = await server.request("GET", V3 + "/account/whoami", token=token)
            self.assertEqual(resp.status, 401)

    async def test_login_again_with_same_device_id_replaces_its_token(self) -> None:
        server = await start_server(self)
        await server.register("alice")
        first = await server.request("POST", V3 + "/login", password_login("alice", device_id="PHONE"))
        second = await server.request("POST", V3 + "/login",
                                      password_login("alice", device_id="PHONE"))
        self.assertEqual(second.body["device_id"], "PHONE")
        old = await server.request("GET", V3 + "/account/whoami", token=first.body["access_token"])
        self.assertEqual(old.status, 401)
        new = await server.request("GET", V3 + "/account/whoami", token=second.body["access_token"])
        self.assertEqual(new.status, 200)

    async def test_missing_and_malformed_tokens(self) -> None:
        server = await start_server(self)
        resp = await server.request("GET", V3 + "/account/whoami")
        self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_MISSING_TOKEN"))
        resp = await server.request("GET", V3 + "/account/whoami", token="not-a-jwt")
        self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
        resp = await server.request("GET", V3 + "/account/whoami",
                                    headers={"Authorization": "Basic abc"})
        self.assertEqual(resp.status, 401)

    async def test_token_in_query_string_works(self) -> None:
        server = await start_server(self)
        reg = await server.register("alice")
        resp = await server.request("GET", V3 + "/account/whoami?access_token=" + reg["access_token"])
        self.assertEqual(resp.status, 200)

    async def test_token_signed_with_another_secret_is_unknown(self) -> None:
        import jwt

        server = await start_server(self)
        reg = await server.register("alice")
        claims = jwt.decode(reg["access_token"], options={"verify_signature": False})
        forged = jwt.encode(claims, "some other secret", algorithm="HS256")
        resp = await server.request("GET", V3 + "/account/whoami", token=forged)
        self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
