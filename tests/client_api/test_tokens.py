"""Admin rights from storage, refresh tokens that act
only when genuine, and a token secret that must be long and random."""

from __future__ import annotations

import os

from twisted.internet import task
from twisted.trial.unittest import TestCase

from roost.client_api.tokens import WeakSecretError, load_or_create_secret
from tests.server_harness import start_server

V3 = "/_matrix/client/v3"


def password_login(user: str, **extra: object) -> dict[str, object]:
    return {"type": "m.login.password", "password": "hunter2-pw",
            "identifier": {"type": "m.id.user", "user": user}, **extra}


class AdminFlagTests(TestCase):
    async def test_admin_rights_follow_storage_not_the_token(self) -> None:
        """The flag is the account's: a change (through the store the admin API and
        `roost user set-admin` use) applies to live sessions at once, cached or not."""
        server = await start_server(self)
        login = await server.register("alice")
        tokens = server.hs.tokens
        assert server.hs.admin is not None
        queries = server.hs.admin.users.queries
        self.assertFalse((await tokens.authenticate(login["access_token"])).is_admin)
        await queries.set_admin(login["user_id"], True)
        self.assertTrue((await tokens.authenticate(login["access_token"])).is_admin)
        await queries.set_admin(login["user_id"], False)
        self.assertFalse((await tokens.authenticate(login["access_token"])).is_admin)


class RefreshTokenTests(TestCase):
    async def test_a_forged_refresh_token_for_a_known_session_changes_nothing(self) -> None:
        server = await start_server(self)
        await server.register("alice")
        login = (await server.request("POST", V3 + "/login",
                                      password_login("alice", refresh_token=True))).body
        session = login["refresh_token"].split(".")[1]  # also inside the access token
        for forged in (f"rt.{session}.0.x.y", f"rt.{session}.7.x.y", f"rt.{session}.0.abc",
                       "rt..0.x.y", "garbage"):
            resp = await server.request("POST", V3 + "/refresh", {"refresh_token": forged})
            self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
        whoami = await server.request("GET", V3 + "/account/whoami", token=login["access_token"])
        self.assertEqual(whoami.status, 200, whoami.body)
        fresh = await server.request("POST", V3 + "/refresh",
                                     {"refresh_token": login["refresh_token"]})
        self.assertEqual(fresh.status, 200, fresh.body)


class TokenSecretTests(TestCase):
    def _write(self, content: bytes) -> str:
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "token.secret")
        with open(path, "wb") as f:
            f.write(content)
        return path

    def test_empty_short_or_repetitive_secrets_are_refused(self) -> None:
        for content in (b"", b"\n", b"secret", b"a" * 64, b"abab" * 20):
            with self.assertRaises(WeakSecretError):
                load_or_create_secret(self._write(content))

    def test_a_made_secret_is_long_and_random_and_kept(self) -> None:
        folder = self.mktemp()
        path = os.path.join(folder, "token.secret")
        made = load_or_create_secret(path)
        self.assertGreaterEqual(len(made), 32)
        self.assertEqual(load_or_create_secret(path), made)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    async def test_roost_refuses_to_start_with_a_weak_secret(self) -> None:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        with open(os.path.join(folder, "token.secret"), "wb") as f:
            f.write(b"\n")
        with self.assertRaises(WeakSecretError):
            await start_server(self, data_dir=folder)


class KnownTokenTests(TestCase):
    """`TokenAuthority.known`, the request path's answer from memory: the requester
    `authenticate` gives, or None whenever `authenticate` must look or would refuse."""

    async def test_known_is_what_authenticate_answers_until_anything_changes(self) -> None:
        clock = task.Clock()
        clock.advance(1_800_000_000)
        server = await start_server(self, clock=clock)
        await server.register("alice")
        tokens = server.hs.tokens
        login = (await server.request("POST", V3 + "/login",
                                      password_login("alice", refresh_token=True))).body
        token = login["access_token"]
        self.assertIsNone(tokens.known(token))  # never checked yet
        requester = await tokens.authenticate(token)
        self.assertIs(tokens.known(token), requester)
        assert server.hs.admin is not None
        await server.hs.admin.users.queries.set_admin(login["user_id"], True)
        self.assertIsNone(tokens.known(token))  # the flag moved: authenticate reads it
        self.assertTrue((await tokens.authenticate(token)).is_admin)
        self.assertTrue(tokens.known(token).is_admin)  # type: ignore[union-attr]
        clock.advance(16 * 60)  # past the access token's lifetime
        self.assertIsNone(tokens.known(token))
        resp = await server.request("GET", V3 + "/account/whoami", token=token)
        self.assertEqual((resp.status, resp.body.get("soft_logout")), (401, True))

    async def test_a_logged_out_token_is_not_known_and_refused(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        ok = await server.request("GET", V3 + "/account/whoami", token=token)
        self.assertEqual(ok.status, 200, ok.body)
        self.assertIsNotNone(server.hs.tokens.known(token))  # the request path kept it
        out = await server.request("POST", V3 + "/logout", {}, token=token)
        self.assertEqual(out.status, 200, out.body)
        self.assertIsNone(server.hs.tokens.known(token))
        resp = await server.request("GET", V3 + "/account/whoami", token=token)
        self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
