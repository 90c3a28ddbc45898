"""Tags, third-party identifiers, OpenID tokens and TURN credentials over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import treq
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.server_harness import q, start_server

V3 = "/_matrix/client/v3"


async def _room(server, token: str) -> str:  # noqa: ANN001
    resp = await server.request("POST", V3 + "/createRoom", {}, token=token)
    return resp.body["room_id"]


class TagTests(TestCase):
    async def test_tags_are_added_listed_removed_and_synced(self) -> None:
        server = await start_server(self)
        reg = await server.register("alice")
        token, me = reg["access_token"], reg["user_id"]
        room = await _room(server, token)
        base = f"{V3}/user/{q(me)}/rooms/{q(room)}/tags"
        for tag, body in (("m.favourite", {"order": 0.5}), ("u.work", {})):
            resp = await server.request("PUT", f"{base}/{tag}", body, token=token)
            self.assertEqual((resp.status, resp.body), (200, {}))
        listed = await server.request("GET", base, token=token)
        self.assertEqual(listed.body, {"tags": {"m.favourite": {"order": 0.5}, "u.work": {}}})
        sync = await server.request("GET", V3 + "/sync", token=token)
        account_data = sync.body["rooms"]["join"][room]["account_data"]["events"]
        self.assertIn({"type": "m.tag", "content": listed.body}, account_data)
        gone = await server.request("DELETE", f"{base}/u.work", token=token)
        self.assertEqual(gone.status, 200)
        again = await server.request("DELETE", f"{base}/never-set", token=token)
        self.assertEqual(again.status, 200)
        listed = await server.request("GET", base, token=token)
        self.assertEqual(listed.body, {"tags": {"m.favourite": {"order": 0.5}}})

    async def test_bad_tag_requests_are_refused_and_change_nothing(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        bob = await server.register("bob")
        token = alice["access_token"]
        room = await _room(server, token)
        base = f"{V3}/user/{q(alice['user_id'])}/rooms/{q(room)}/tags"
        cases = [
            ("PUT", f"{base}/t", {"order": "first"}, token, 400, "M_BAD_JSON"),
            ("PUT", f"{base}/t", None, token, 400, "M_NOT_JSON"),
            ("PUT", f"{base}/{'x' * 300}", {}, token, 400, "M_INVALID_PARAM"),
            ("PUT", f"{base}/t", {}, bob["access_token"], 403, "M_FORBIDDEN"),
            ("GET", base, None, bob["access_token"], 403, "M_FORBIDDEN"),
            ("PUT", f"{V3}/user/{q(alice['user_id'])}/rooms/{q('!nope:test.roost')}/tags/t", {},
             token, 404, "M_NOT_FOUND"),
            ("PUT", f"{V3}/user/{q(alice['user_id'])}/rooms/not-a-room/tags/t", {}, token, 400,
             "M_INVALID_PARAM"),
        ]
        for method, path, body, who, status, errcode in cases:
            resp = await server.request(method, path, body, token=who)
            self.assertEqual((resp.status, resp.body["errcode"]), (status, errcode), path)
        listed = await server.request("GET", base, token=token)
        self.assertEqual(listed.body, {"tags": {}})


class ThreePidTests(TestCase):
    async def test_no_identifiers_and_none_can_be_added(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        listed = await server.request("GET", V3 + "/account/3pid", token=token)
        self.assertEqual((listed.status, listed.body), (200, {"threepids": []}))
        email = {"client_secret": "s3cret", "email": "a@example.org", "send_attempt": 1}
        phone = {"client_secret": "s3cret", "country": "GB", "phone_number": "07700900000",
                 "send_attempt": 1}
        for path, body, auth in (
            ("/account/3pid/email/requestToken", email, True),
            ("/account/3pid/msisdn/requestToken", phone, True),
            ("/register/email/requestToken", email, False),
            ("/account/password/msisdn/requestToken", phone, False),
        ):
            resp = await server.request("POST", V3 + path, body, token=token if auth else None)
            self.assertEqual((resp.status, resp.body["errcode"]),
                             (400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"), path)
            resp = await server.request("POST", V3 + path, {**body, "send_attempt": "1"},
                                        token=token if auth else None)
            self.assertEqual(resp.body["errcode"], "M_BAD_JSON", path)
        add = await server.request("POST", V3 + "/account/3pid/add",
                                   {"client_secret": "s", "sid": "1"}, token=token)
        self.assertEqual((add.status, add.body["errcode"]), (403, "M_FORBIDDEN"))
        bind = await server.request("POST", V3 + "/account/3pid/bind",
                                    {"client_secret": "s", "sid": "1"}, token=token)
        self.assertEqual((bind.status, bind.body["errcode"]), (400, "M_MISSING_PARAM"))
        old = await server.request("POST", V3 + "/account/3pid", {"three_pid_creds": {
            "client_secret": "s", "sid": "1", "id_server": "id.example.org"}}, token=token)
        self.assertEqual((old.status, old.body["errcode"]), (403, "M_THREEPID_AUTH_FAILED"))
        removal = {"medium": "email", "address": "a@example.org"}
        delete = await server.request("POST", V3 + "/account/3pid/delete", removal, token=token)
        self.assertEqual((delete.status, delete.body["errcode"]), (404, "M_THREEPID_NOT_FOUND"))
        unbind = await server.request("POST", V3 + "/account/3pid/unbind", removal, token=token)
        self.assertEqual(unbind.body, {"id_server_unbind_result": "no-support"})
        bad = await server.request("POST", V3 + "/account/3pid/unbind",
                                   {"medium": "pigeon", "address": "x"}, token=token)
        self.assertEqual((bad.status, bad.body["errcode"]), (400, "M_INVALID_PARAM"))
        listed = await server.request("GET", V3 + "/account/3pid", token=token)
        self.assertEqual(listed.body, {"threepids": []})


class OpenIdTests(TestCase):
    async def _userinfo(self, server, token: str | None) -> tuple[int, dict]:  # noqa: ANN001
        port = reactor.listenTCP(0, server.hs.federation.site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/_matrix/federation/v1/openid/userinfo"
        resp = await treq.get(url, params={"access_token": token} if token else {},
                              pool=server.pool)
        return resp.code, json.loads(await resp.content())

    async def test_token_names_its_user_to_a_third_party_until_it_expires(self) -> None:
        clock = Clock()
        clock.advance(1_000_000)
        server = await start_server(self, clock=clock)
        reg = await server.register("alice")
        resp = await server.request("POST", f"{V3}/user/{q(reg['user_id'])}/openid/request_token",
                                    {}, token=reg["access_token"])
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(resp.body["token_type"], "Bearer")
        self.assertEqual(resp.body["matrix_server_name"], "test.roost")
        self.assertEqual(resp.body["expires_in"], 3600)
        self.assertEqual(await self._userinfo(server, resp.body["access_token"]),
                         (200, {"sub": reg["user_id"]}))
        clock.advance(3601)
        status, body = await self._userinfo(server, resp.body["access_token"])
        self.assertEqual((status, body["errcode"]), (401, "M_UNKNOWN_TOKEN"))

    async def test_unknown_tokens_and_other_users_are_refused(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        resp = await server.request("POST", f"{V3}/user/{q('@bob:test.roost')}/openid/request_token",
                                    {}, token=alice["access_token"])
        self.assertEqual((resp.status, resp.body["errcode"]), (403, "M_FORBIDDEN"))
        for token in ("made-up", None):
            status, body = await self._userinfo(server, token)
            self.assertEqual((status, body["errcode"]), (401, "M_UNKNOWN_TOKEN"))


class TurnServerTests(TestCase):
    async def test_no_turn_configured_gives_an_empty_answer(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        resp = await server.request("GET", V3 + "/voip/turnServer", token=token)
        self.assertEqual((resp.status, resp.body), (200, {}))

    async def test_credentials_follow_coturns_shared_secret_scheme(self) -> None:
        clock = Clock()
        clock.advance(1_700_000_000)
        uris = ["turn:turn.example.org:3478?transport=udp"]
        server = await start_server(self, clock=clock, voip={
            "turn_uris": uris, "turn_shared_secret": "s3cret", "turn_user_lifetime": "1h"})
        reg = await server.register("alice")
        resp = await server.request("GET", V3 + "/voip/turnServer", token=reg["access_token"])
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual((resp.body["uris"], resp.body["ttl"]), (uris, 3600))
        self.assertEqual(resp.body["username"], f"{1_700_000_000 + 3600}:{reg['user_id']}")
        expected = base64.b64encode(hmac.new(b"s3cret", resp.body["username"].encode(),
                                             hashlib.sha1).digest()).decode()
        self.assertEqual(resp.body["password"], expected)
        unauthenticated = await server.request("GET", V3 + "/voip/turnServer")
        self.assertEqual(unauthenticated.status, 401)

    async def test_guests_get_nothing_when_not_allowed(self) -> None:
        server = await start_server(self, registration={"enabled": True, "allow_guests": True},
                                    voip={"turn_uris": ["turn:t.example.org"],
                                          "turn_shared_secret": "s", "turn_allow_guests": False})
        guest = await server.request("POST", V3 + "/register?kind=guest", {})
        resp = await server.request("GET", V3 + "/voip/turnServer",
                                    token=guest.body["access_token"])
        self.assertEqual((resp.status, resp.body), (200, {}))


class SupportTests(TestCase):
    async def test_support_contacts_from_the_configuration(self) -> None:
        server = await start_server(self, support={
            "contacts": [{"role": "m.role.admin", "matrix_id": "@admin:test.roost"},
                         {"role": "m.role.security", "email_address": "sec@example.org"}],
            "page": "https://example.org/help"})
        resp = await server.request("GET", "/.well-known/matrix/support")
        self.assertEqual((resp.status, resp.body), (200, {
            "contacts": [{"role": "m.role.admin", "matrix_id": "@admin:test.roost"},
                         {"role": "m.role.security", "email_address": "sec@example.org"}],
            "support_page": "https://example.org/help"}))

    async def test_nothing_configured_is_not_found(self) -> None:
        server = await start_server(self)
        resp = await server.request("GET", "/.well-known/matrix/support")
        self.assertEqual((resp.status, resp.body["errcode"]), (404, "M_NOT_FOUND"))

    def test_a_contact_needs_a_way_to_reach_it(self) -> None:
        from roost.homeserver.config import ConfigError
        from tests.server_harness import test_config

        with self.assertRaises(ConfigError) as caught:
            test_config(self.mktemp(), support={"contacts": [{"role": "m.role.admin"}]})
        self.assertIn("support.contacts[0]", str(caught.exception))
