"""Shared-secret registration (/_synapse/admin/v1/register), and Synapse's own
`register_new_matrix_user` tool creating users on Roost."""

from __future__ import annotations

import hashlib
import hmac
import os

from twisted.internet import utils
from twisted.trial.unittest import SkipTest, TestCase

from tests.server_harness import start_server

REGISTER = "/_synapse/admin/v1/register"
SECRET = "a-shared-secret-for-tests"
TOOL = os.path.join(os.path.dirname(__file__), "..", "..", ".venv-synapse", "bin",
                    "register_new_matrix_user")


def mac(nonce: str, user: str, password: str, admin: bool, secret: str = SECRET) -> str:
    msg = b"\x00".join([nonce.encode(), user.encode(), password.encode(),
                        b"admin" if admin else b"notadmin"])
    return hmac.new(secret.encode(), msg, hashlib.sha1).hexdigest()


async def shared_secret_server(testcase: TestCase):
    return await start_server(testcase, registration={"enabled": False,
                                                      "shared_secret": SECRET})


class SharedSecretRegistrationTests(TestCase):
    async def test_registers_a_user_with_a_valid_mac_while_registration_is_closed(self) -> None:
        server = await shared_secret_server(self)
        nonce = (await server.request("GET", REGISTER)).body["nonce"]
        resp = await server.request("POST", REGISTER, {
            "nonce": nonce, "username": "root", "password": "pw-of-root", "admin": True,
            "mac": mac(nonce, "root", "pw-of-root", True)})
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(resp.body["user_id"], "@root:test.roost")
        who = await server.request("GET", "/_matrix/client/v3/account/whoami",
                                   token=resp.body["access_token"])
        self.assertEqual(who.body["user_id"], "@root:test.roost")
        self.assertTrue(await server.hs.accounts.is_admin("@root:test.roost"))
        profile = await server.request("GET", "/_matrix/client/v3/profile/@root:test.roost")
        self.assertEqual(profile.body.get("displayname"), "root")

    async def test_a_wrong_mac_is_forbidden_and_creates_nobody(self) -> None:
        server = await shared_secret_server(self)
        nonce = (await server.request("GET", REGISTER)).body["nonce"]
        resp = await server.request("POST", REGISTER, {
            "nonce": nonce, "username": "eve", "password": "pw", "admin": True,
            "mac": mac(nonce, "eve", "pw", False)})  # signed as not-admin
        self.assertEqual((resp.status, resp.body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertFalse(await server.hs.accounts.users.user_exists("@eve:test.roost"))

    async def test_a_nonce_works_once(self) -> None:
        server = await shared_secret_server(self)
        nonce = (await server.request("GET", REGISTER)).body["nonce"]
        body = {"nonce": nonce, "username": "bob", "password": "pw-bob",
                "mac": mac(nonce, "bob", "pw-bob", False)}
        self.assertEqual((await server.request("POST", REGISTER, body)).status, 200)
        again = await server.request("POST", REGISTER, {**body, "username": "bob2",
                                                        "mac": mac(nonce, "bob2", "pw-bob", False)})
        self.assertEqual((again.status, again.body["errcode"]), (400, "M_UNKNOWN"))

    async def test_bad_bodies_are_matrix_errors(self) -> None:
        server = await shared_secret_server(self)
        nonce = (await server.request("GET", REGISTER)).body["nonce"]
        missing = await server.request("POST", REGISTER, {"nonce": nonce, "username": "x"})
        self.assertEqual((missing.status, missing.body["errcode"]), (400, "M_MISSING_PARAM"))
        wrong = await server.request("POST", REGISTER, {"nonce": nonce, "username": 5,
                                                        "password": "p", "mac": "m"})
        self.assertEqual((wrong.status, wrong.body["errcode"]), (400, "M_BAD_JSON"))
        bad_name = await server.request("POST", REGISTER, {
            "nonce": nonce, "username": "Not Valid", "password": "p",
            "mac": mac(nonce, "Not Valid", "p", False)})
        self.assertEqual((bad_name.status, bad_name.body["errcode"]), (400, "M_INVALID_USERNAME"))

    async def test_without_a_shared_secret_it_is_off(self) -> None:
        server = await start_server(self)
        resp = await server.request("GET", REGISTER)
        self.assertEqual(resp.status, 400)
        self.assertIn("not enabled", resp.body["error"])


class RegisterNewMatrixUserTests(TestCase):
    """The real tool operators use, from the pinned matrix-synapse package."""

    async def test_register_new_matrix_user_creates_an_admin_on_roost(self) -> None:
        if not os.path.exists(TOOL):
            raise SkipTest("no .venv-synapse: `make test` installs the pinned matrix-synapse")
        server = await shared_secret_server(self)
        out, err, code = await utils.getProcessOutputAndValue(
            os.path.abspath(TOOL), ["-u", "operator", "-p", "pw-of-operator", "-a",
                                    "-k", SECRET, server.base_url], env=dict(os.environ))
        self.assertEqual(code, 0, (out, err))
        self.assertTrue(await server.hs.accounts.is_admin("@operator:test.roost"))
        login = await server.request("POST", "/_matrix/client/v3/login", {
            "type": "m.login.password", "password": "pw-of-operator",
            "identifier": {"type": "m.id.user", "user": "operator"}})
        self.assertEqual(login.status, 200, login.body)
