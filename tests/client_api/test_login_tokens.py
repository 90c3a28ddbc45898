"""POST /login/get_token and the m.login.token login it enables."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.server_harness import start_server

V3 = "/_matrix/client/v3"
GET_TOKEN = "/_matrix/client/v1/login/get_token"
PASSWORD_AUTH = {"type": "m.login.password", "password": "hunter2-pw",
                 "identifier": {"type": "m.id.user", "user": "alice"}}


class LoginTokenTests(TestCase):
    async def test_a_token_logs_a_new_device_in_once(self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        flows = await server.request("GET", V3 + "/login")
        self.assertIn({"type": "m.login.token", "get_login_token": True}, flows.body["flows"])
        challenge = await server.request("POST", GET_TOKEN, {}, token=alice)
        self.assertEqual(challenge.status, 401)
        self.assertEqual(challenge.body["flows"], [{"stages": ["m.login.password"]}])
        made = await server.request("POST", GET_TOKEN, {"auth": {
            **PASSWORD_AUTH, "session": challenge.body["session"]}}, token=alice)
        self.assertEqual(made.status, 200, made.body)
        self.assertEqual(made.body["expires_in_ms"], 120_000)
        login = {"type": "m.login.token", "token": made.body["login_token"],
                 "device_id": "NEWPHONE"}
        first = await server.request("POST", V3 + "/login", login)
        self.assertEqual(first.status, 200, first.body)
        self.assertEqual((first.body["user_id"], first.body["device_id"]),
                         ("@alice:test.roost", "NEWPHONE"))
        who = await server.request("GET", V3 + "/account/whoami",
                                   token=first.body["access_token"])
        self.assertEqual(who.body["user_id"], "@alice:test.roost")
        again = await server.request("POST", V3 + "/login", login)
        self.assertEqual((again.status, again.body["errcode"]), (403, "M_FORBIDDEN"))

    async def test_expired_wrong_and_missing_tokens_and_wrong_passwords(self) -> None:
        clock = Clock()
        clock.advance(1_000_000)
        server = await start_server(self, clock=clock)
        alice = (await server.register("alice"))["access_token"]
        wrong = await server.request("POST", GET_TOKEN, {"auth": {
            **PASSWORD_AUTH, "password": "nope"}}, token=alice)
        self.assertEqual((wrong.status, wrong.body["errcode"]), (401, "M_FORBIDDEN"))
        made = await server.request("POST", GET_TOKEN, {"auth": PASSWORD_AUTH}, token=alice)
        clock.advance(121)
        late = await server.request("POST", V3 + "/login", {
            "type": "m.login.token", "token": made.body["login_token"]})
        self.assertEqual((late.status, late.body["errcode"]), (403, "M_FORBIDDEN"))
        for body, status, errcode in (({"type": "m.login.token"}, 400, "M_MISSING_PARAM"),
                                      ({"type": "m.login.token", "token": 5}, 400, "M_BAD_JSON"),
                                      ({"type": "m.login.token", "token": "made-up"}, 403,
                                       "M_FORBIDDEN")):
            resp = await server.request("POST", V3 + "/login", body)
            self.assertEqual((resp.status, resp.body["errcode"]), (status, errcode), body)
        anonymous = await server.request("POST", GET_TOKEN, {})
        self.assertEqual(anonymous.status, 401)
        self.assertEqual(anonymous.body["errcode"], "M_MISSING_TOKEN")
