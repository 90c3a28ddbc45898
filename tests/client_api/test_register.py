"""POST /register and GET /register/available over real HTTP."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.server_harness import start_server

REGISTER = "/_matrix/client/v3/register"


class RegisterTests(TestCase):
    async def test_first_request_without_auth_gets_dummy_flow(self) -> None:
        server = await start_server(self)
        resp = await server.request("POST", REGISTER, {"username": "alice", "password": "pw-alice"})
        self.assertEqual(resp.status, 401)
        self.assertEqual(resp.body["flows"], [{"stages": ["m.login.dummy"]}])
        self.assertIn("session", resp.body)

    async def test_dummy_flow_registers_and_logs_in(self) -> None:
        server = await start_server(self)
        first = await server.request("POST", REGISTER, {"username": "alice", "password": "pw"})
        body = {"username": "alice", "password": "pw",
                "auth": {"type": "m.login.dummy", "session": first.body["session"]}}
        resp = await server.request("POST", REGISTER, body)
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(resp.body["user_id"], "@alice:test.roost")
        self.assertNotIn("refresh_token", resp.body)
        who = await server.request("GET", "/_matrix/client/v3/account/whoami",
                                   token=resp.body["access_token"])
        self.assertEqual(who.body["user_id"], "@alice:test.roost")
        self.assertEqual(who.body["device_id"], resp.body["device_id"])

    async def test_taken_username_is_user_in_use(self) -> None:
        server = await start_server(self)
        await server.register("alice")
        resp = await server.request("POST", REGISTER, {"username": "alice", "password": "pw",
                                                       "auth": {"type": "m.login.dummy"}})
        self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_USER_IN_USE"))
        avail = await server.request("GET", REGISTER + "/available?username=alice")
        self.assertEqual((avail.status, avail.body["errcode"]), (400, "M_USER_IN_USE"))

    async def test_invalid_usernames_are_refused(self) -> None:
        server = await start_server(self)
        for name in ("Alice", "al ice", "al:ice", "émile", "x" * 300, "@bob:elsewhere.org"):
            resp = await server.request("POST", REGISTER, {"username": name, "password": "pw",
                                                           "auth": {"type": "m.login.dummy"}})
            self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_USERNAME"), name)
        avail = await server.request("GET", REGISTER + "/available?username=Bad%20Name")
        self.assertEqual(avail.body["errcode"], "M_INVALID_USERNAME")

    async def test_available_for_a_free_name(self) -> None:
        server = await start_server(self)
        resp = await server.request("GET", REGISTER + "/available?username=newbie")
        self.assertEqual((resp.status, resp.body), (200, {"available": True}))

    async def test_registration_disabled_is_forbidden_and_creates_nothing(self) -> None:
        server = await start_server(self, registration={"enabled": False})
        resp = await server.request("POST", REGISTER, {"username": "alice", "password": "pw",
                                                       "auth": {"type": "m.login.dummy"}})
        self.assertEqual((resp.status, resp.body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertFalse(await server.hs.accounts.users.user_exists("@alice:test.roost"))

    async def test_unknown_auth_type_is_refused(self) -> None:
        server = await start_server(self)
        resp = await server.request("POST", REGISTER, {"username": "alice", "password": "pw",
                                                       "auth": {"type": "m.login.magic"}})
        self.assertEqual(resp.status, 401)
        self.assertIn("flows", resp.body)
        self.assertFalse(await server.hs.accounts.users.user_exists("@alice:test.roost"))

    async def test_inhibit_login_returns_no_token(self) -> None:
        server = await start_server(self)
        body = await server.register("carol", inhibit_login=True)
        self.assertEqual(body, {"user_id": "@carol:test.roost"})

    async def test_guest_registration_is_forbidden(self) -> None:
        server = await start_server(self)
        resp = await server.request("POST", REGISTER + "?kind=guest", {})
        self.assertEqual((resp.status, resp.body["errcode"]), (403, "M_GUEST_ACCESS_FORBIDDEN"))

    async def test_missing_password_is_missing_param(self) -> None:
        server = await start_server(self)
        resp = await server.request("POST", REGISTER, {"username": "dave",
                                                       "auth": {"type": "m.login.dummy"}})
        self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_MISSING_PARAM"))

    async def test_generated_user_id_when_no_username(self) -> None:
        server = await start_server(self)
        resp = await server.request("POST", REGISTER, {"password": "pw",
                                                       "auth": {"type": "m.login.dummy"}})
        self.assertEqual(resp.status, 200)
        self.assertTrue(resp.body["user_id"].endswith(":test.roost"))
