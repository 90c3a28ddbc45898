"""POST /register and GET /register/available over real HTTP."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from roost.storage.registration_tokens import RegistrationTokenStore
from tests.server_harness import q, start_server

REGISTER = "/_matrix/client/v3/register"


class RegisterTests(TestCase):
    async def test_first_request_without_auth_gets_dummy_flow(self) -> None:
        server = await start_server(self)
        resp = await server.request("POST", REGISTER, {"username": "alice", "password": "pw-alice"})
        self.assertEqual(resp.status, 401)
        self.assertEqual(resp.body["flows"], [{"stages": ["m.login.dummy"]}])
        self.assertIn("session", resp.body)
        # No stage has failed: the challenge carries no errcode (clients read one as failure).
        self.assertNotIn("errcode", resp.body)
        status = await server.request("POST", REGISTER, {"auth": {"session": resp.body["session"]}})
        self.assertEqual((status.status, status.body["session"]), (401, resp.body["session"]))
        self.assertNotIn("errcode", status.body)

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
        self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_UNRECOGNIZED"))
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


class RegisterFlowTests(TestCase):
    async def test_empty_body_gets_flows_and_a_session_that_the_full_request_can_use(self) -> None:
        server = await start_server(self)
        probe = await server.request("POST", REGISTER, {})
        self.assertEqual(probe.status, 401, probe.body)
        self.assertEqual(probe.body["flows"], [{"stages": ["m.login.dummy"]}])
        body = {"username": "cin", "password": "pw-cin",
                "auth": {"type": "m.login.dummy", "session": probe.body["session"]}}
        done = await server.request("POST", REGISTER, body)
        self.assertEqual(done.status, 200, done.body)
        # The session is spent: it cannot register a second account.
        again = await server.request("POST", REGISTER, {**body, "username": "cin2"})
        self.assertEqual((again.status, again.body["errcode"]), (400, "M_INVALID_PARAM"))
        self.assertFalse(await server.hs.accounts.users.user_exists("@cin2:test.roost"))

    async def test_session_is_bound_to_the_parameters_that_began_it(self) -> None:
        server = await start_server(self)
        first = await server.request("POST", REGISTER, {"username": "ann", "password": "pw"})
        resp = await server.request("POST", REGISTER, {
            "username": "mallory", "password": "pw",
            "auth": {"type": "m.login.dummy", "session": first.body["session"]}})
        self.assertEqual((resp.status, resp.body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertFalse(await server.hs.accounts.users.user_exists("@mallory:test.roost"))

    async def test_new_account_display_name_is_its_localpart(self) -> None:
        server = await start_server(self)
        await server.register("frida")
        resp = await server.request("GET", "/_matrix/client/v3/profile/@frida:test.roost")
        self.assertEqual(resp.body, {"displayname": "frida"})

    async def test_wrong_types_and_kinds_are_refused_and_create_nothing(self) -> None:
        server = await start_server(self)
        for body in ({"username": 5, "password": "pw", "auth": {"type": "m.login.dummy"}},
                     {"username": "gus", "password": ["pw"], "auth": {"type": "m.login.dummy"}},
                     {"username": "gus", "password": "pw", "auth": "dummy"},
                     {"username": "gus", "password": "pw", "inhibit_login": "yes",
                      "auth": {"type": "m.login.dummy"}}):
            resp = await server.request("POST", REGISTER, body)
            self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_BAD_JSON"), body)
        resp = await server.request("POST", REGISTER + "?kind=robot", {})
        self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_PARAM"))
        resp = await server.request("POST", REGISTER, {"username": "gus", "password": "pw",
                                                       "auth": {"type": "m.login.dummy",
                                                                "session": "made-up"}})
        self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_PARAM"))
        self.assertFalse(await server.hs.accounts.users.user_exists("@gus:test.roost"))


VALIDITY = "/_matrix/client/v1/register/m.login.registration_token/validity"


class RegistrationTokenTests(TestCase):
    async def _server(self) -> Any:
        server = await start_server(self, registration={"enabled": True, "require_token": True})
        self.tokens = RegistrationTokenStore(server.hs.db)
        return server

    async def test_flows_ask_for_a_token_and_dummy_is_refused(self) -> None:
        server = await self._server()
        probe = await server.request("POST", REGISTER, {})
        self.assertEqual(probe.body["flows"], [{"stages": ["m.login.registration_token"]}])
        resp = await server.request("POST", REGISTER, {"username": "ann", "password": "pw",
                                                       "auth": {"type": "m.login.dummy"}})
        self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_UNRECOGNIZED"))
        self.assertFalse(await server.hs.accounts.users.user_exists("@ann:test.roost"))

    async def test_a_token_of_one_use_lets_in_one_account(self) -> None:
        server = await self._server()
        await self.tokens.create("once", 1, None, 0)
        valid = await server.request("GET", VALIDITY + "?token=once")
        self.assertEqual((valid.status, valid.body), (200, {"valid": True}))
        auth = {"type": "m.login.registration_token", "token": "once"}
        ok = await server.request("POST", REGISTER, {"username": "ann", "password": "pw",
                                                     "auth": auth})
        self.assertEqual(ok.status, 200, ok.body)
        spent = await server.request("POST", REGISTER, {"username": "bob", "password": "pw",
                                                        "auth": auth})
        self.assertEqual((spent.status, spent.body["errcode"]), (401, "M_FORBIDDEN"))
        self.assertIn("flows", spent.body)
        self.assertFalse(await server.hs.accounts.users.user_exists("@bob:test.roost"))
        self.assertEqual((await self.tokens.get("once")).completed, 1)  # type: ignore[union-attr]
        after = await server.request("GET", VALIDITY + "?token=once")
        self.assertEqual(after.body, {"valid": False})

    async def test_unknown_expired_and_malformed_tokens(self) -> None:
        server = await self._server()
        await self.tokens.create("old", None, 1000, 0)  # expired in 1970
        for token in ("nope", "old"):
            resp = await server.request("GET", VALIDITY + f"?token={token}")
            self.assertEqual(resp.body, {"valid": False}, token)
            reg = await server.request("POST", REGISTER, {
                "username": "eve", "password": "pw",
                "auth": {"type": "m.login.registration_token", "token": token}})
            self.assertEqual((reg.status, reg.body["errcode"]), (401, "M_FORBIDDEN"))
        reg = await server.request("POST", REGISTER, {
            "username": "eve", "password": "pw",
            "auth": {"type": "m.login.registration_token", "token": 7}})
        self.assertEqual(reg.status, 401)
        missing = await server.request("GET", VALIDITY)
        self.assertEqual((missing.status, missing.body["errcode"]), (400, "M_MISSING_PARAM"))
        self.assertFalse(await server.hs.accounts.users.user_exists("@eve:test.roost"))

    async def test_taken_username_does_not_spend_the_token(self) -> None:
        server = await self._server()
        await self.tokens.create("two", 2, None, 0)
        auth = {"type": "m.login.registration_token", "token": "two"}
        await server.request("POST", REGISTER, {"username": "ann", "password": "pw", "auth": auth})
        again = await server.request("POST", REGISTER, {"username": "ann", "password": "pw",
                                                        "auth": auth})
        self.assertEqual(again.body["errcode"], "M_USER_IN_USE")
        self.assertEqual((await self.tokens.get("two")).completed, 1)  # type: ignore[union-attr]

    async def test_validity_is_forbidden_when_registration_is_off(self) -> None:
        server = await start_server(self, registration={"enabled": False})
        resp = await server.request("GET", VALIDITY + "?token=x")
        self.assertEqual((resp.status, resp.body["errcode"]), (403, "M_FORBIDDEN"))


class GuestTests(TestCase):
    async def test_guest_registers_and_is_a_guest(self) -> None:
        server = await start_server(self, registration={"enabled": True, "allow_guests": True})
        resp = await server.request("POST", REGISTER + "?kind=guest",
                                    {"username": "ignored", "initial_device_display_name": "G"})
        self.assertEqual(resp.status, 200, resp.body)
        self.assertNotIn("ignored", resp.body["user_id"])
        who = await server.request("GET", "/_matrix/client/v3/account/whoami",
                                   token=resp.body["access_token"])
        self.assertEqual(who.body["is_guest"], True)
        user = await server.hs.accounts.users.get_user(resp.body["user_id"])
        assert user is not None
        self.assertTrue(user.is_guest)
        # A guest has no password, so it cannot log in with one.
        login = await server.request("POST", "/_matrix/client/v3/login", {
            "type": "m.login.password", "user": resp.body["user_id"], "password": ""})
        self.assertEqual(login.status, 403)

    async def test_guest_may_not_create_rooms_and_joins_only_guest_rooms(self) -> None:
        server = await start_server(self, registration={"enabled": True, "allow_guests": True})
        guest = (await server.request("POST", REGISTER + "?kind=guest", {})).body["access_token"]
        host = (await server.register("host"))["access_token"]
        create = await server.request("POST", "/_matrix/client/v3/createRoom", {}, token=guest)
        self.assertEqual((create.status, create.body["errcode"]), (403, "M_GUEST_ACCESS_FORBIDDEN"))
        closed = (await server.request("POST", "/_matrix/client/v3/createRoom",
                                       {"preset": "public_chat"}, token=host)).body["room_id"]
        open_ = (await server.request("POST", "/_matrix/client/v3/createRoom", {
            "preset": "public_chat", "initial_state": [
                {"type": "m.room.guest_access", "state_key": "",
                 "content": {"guest_access": "can_join"}}]}, token=host)).body["room_id"]
        refused = await server.request("POST", f"/_matrix/client/v3/join/{q(closed)}", {},
                                       token=guest)
        self.assertEqual((refused.status, refused.body["errcode"]), (403, "M_FORBIDDEN"))
        joined = await server.request("POST", f"/_matrix/client/v3/rooms/{q(open_)}/join", {},
                                      token=guest)
        self.assertEqual(joined.status, 200, joined.body)
        sent = await server.request("PUT", f"/_matrix/client/v3/rooms/{q(open_)}/send/"
                                    "m.room.message/t1", {"msgtype": "m.text", "body": "hi"},
                                    token=guest)
        self.assertEqual(sent.status, 200, sent.body)
        members = await server.request("GET", f"/_matrix/client/v3/rooms/{q(closed)}/members",
                                       token=guest)
        self.assertEqual(members.status, 403)
        for path in (f"/_matrix/client/v1/room_summary/{q(closed)}",
                     f"/_matrix/client/unstable/im.nheko.summary/summary/{q(closed)}"):
            summary = await server.request("GET", path, token=guest)
            self.assertEqual(summary.status, 200, (path, summary.body))
        search = await server.request("POST", "/_matrix/client/v3/search", {
            "search_categories": {"room_events": {"search_term": "hi"}}}, token=guest)
        self.assertEqual((search.status, search.body["errcode"]),
                         (403, "M_GUEST_ACCESS_FORBIDDEN"))

    async def test_guests_disabled_by_default(self) -> None:
        server = await start_server(self)
        resp = await server.request("POST", REGISTER + "?kind=guest")
        self.assertEqual((resp.status, resp.body["errcode"]), (403, "M_GUEST_ACCESS_FORBIDDEN"))


class GuestEvictionTests(TestCase):
    async def test_guests_leave_when_the_room_stops_allowing_them(self) -> None:
        server = await start_server(self, registration={"enabled": True, "allow_guests": True})
        guest = await server.request("POST", REGISTER + "?kind=guest", {})
        guest_token, guest_id = guest.body["access_token"], guest.body["user_id"]
        host = await server.register("host")
        member = await server.register("member")
        room = (await server.request("POST", "/_matrix/client/v3/createRoom", {
            "preset": "public_chat", "initial_state": [
                {"type": "m.room.guest_access", "state_key": "",
                 "content": {"guest_access": "can_join"}}]},
            token=host["access_token"])).body["room_id"]
        for token in (guest_token, member["access_token"]):
            joined = await server.request("POST", f"/_matrix/client/v3/rooms/{q(room)}/join", {},
                                          token=token)
            self.assertEqual(joined.status, 200, joined.body)
        await server.request("PUT", f"/_matrix/client/v3/rooms/{q(room)}/state/"
                             "m.room.guest_access/", {"guest_access": "forbidden"},
                             token=host["access_token"])

        async def membership(user: str) -> str:
            return str(await server.hs.engine.membership(room, user))

        for _ in range(1200):  # the watcher acts on the real reactor, half a second later
            if await membership(guest_id) == "leave":
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(await membership(guest_id), "leave")
        self.assertEqual(await membership(member["user_id"]), "join")
        again = await server.request("POST", f"/_matrix/client/v3/rooms/{q(room)}/join", {},
                                     token=guest_token)
        self.assertEqual((again.status, again.body["errcode"]), (403, "M_FORBIDDEN"))


class GuestUpgradeTests(TestCase):
    async def test_a_guest_becomes_a_full_account_with_the_same_id(self) -> None:
        server = await start_server(self, registration={"enabled": True, "allow_guests": True})
        guest = (await server.request("POST", REGISTER + "?kind=guest", {})).body
        localpart = guest["user_id"][1:].split(":")[0]
        body = {"guest_access_token": guest["access_token"], "username": localpart,
                "password": "now-a-user", "auth": {"type": "m.login.dummy"}}
        resp = await server.request("POST", REGISTER, body)
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual((resp.body["user_id"], resp.body["device_id"]),
                         (guest["user_id"], guest["device_id"]))
        who = await server.request("GET", "/_matrix/client/v3/account/whoami",
                                   token=resp.body["access_token"])
        self.assertEqual((who.body["user_id"], who.body["is_guest"]), (guest["user_id"], False))
        room = await server.request("POST", "/_matrix/client/v3/createRoom", {},
                                    token=resp.body["access_token"])
        self.assertEqual(room.status, 200, room.body)
        old = await server.request("GET", "/_matrix/client/v3/account/whoami",
                                   token=guest["access_token"])
        self.assertEqual(old.status, 401)
        login = await server.request("POST", "/_matrix/client/v3/login", {
            "type": "m.login.password", "user": guest["user_id"], "password": "now-a-user"})
        self.assertEqual(login.status, 200, login.body)
        again = await server.request("POST", REGISTER, {**body, "guest_access_token":
                                                        resp.body["access_token"]})
        self.assertEqual((again.status, again.body["errcode"]), (403, "M_FORBIDDEN"))

    async def test_bad_upgrades_are_refused_and_leave_the_guest_a_guest(self) -> None:
        server = await start_server(self, registration={"enabled": True, "allow_guests": True})
        guest = (await server.request("POST", REGISTER + "?kind=guest", {})).body
        for body, status, errcode in (
            ({"guest_access_token": guest["access_token"], "username": "someoneelse"}, 400,
             "M_INVALID_PARAM"),
            ({"guest_access_token": guest["access_token"]}, 400, "M_INVALID_PARAM"),
            ({"guest_access_token": "made-up", "username": "x"}, 401, "M_UNKNOWN_TOKEN"),
            ({"guest_access_token": 5, "username": "x"}, 400, "M_BAD_JSON"),
        ):
            resp = await server.request("POST", REGISTER, {
                **body, "password": "pw", "auth": {"type": "m.login.dummy"}})
            self.assertEqual((resp.status, resp.body["errcode"]), (status, errcode), body)
        user = await server.hs.accounts.users.get_user(guest["user_id"])
        assert user is not None
        self.assertTrue(user.is_guest)
