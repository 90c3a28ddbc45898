"""Registration tokens through the admin API, and /register spending them."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.admin.test_users import V3, A, admin_and_user

T = f"{A}/v1/registration_tokens"


class AdminRegistrationTokenTests(TestCase):
    async def test_make_list_change_and_delete_tokens(self) -> None:
        server, admin, alice = await admin_and_user(self)
        made = await server.request("POST", f"{T}/new", {"token": "let-me-in",
                                                          "uses_allowed": 1}, token=admin)
        self.assertEqual(made.body, {"token": "let-me-in", "uses_allowed": 1, "pending": 0,
                                     "completed": 0, "expiry_time": None})
        random = await server.request("POST", f"{T}/new", {"length": 32}, token=admin)
        self.assertEqual(len(random.body["token"]), 32)
        listed = await server.request("GET", T, token=admin)
        self.assertEqual(sorted(t["token"] for t in listed.body["registration_tokens"]),
                         sorted(["let-me-in", random.body["token"]]))
        changed = await server.request("PUT", f"{T}/let-me-in", {"uses_allowed": 5},
                                       token=admin)
        self.assertEqual(changed.body["uses_allowed"], 5)
        self.assertEqual((await server.request("GET", f"{T}/let-me-in", token=admin)).body,
                         changed.body)
        self.assertEqual((await server.request("DELETE", f"{T}/let-me-in", token=admin)).status,
                         200)
        gone = await server.request("GET", f"{T}/let-me-in", token=admin)
        self.assertEqual((gone.status, gone.body["errcode"]), (404, "M_NOT_FOUND"))
        forbidden = await server.request("GET", T, token=alice["access_token"])
        self.assertEqual(forbidden.status, 403)

    async def test_bad_input_is_refused_and_changes_nothing(self) -> None:
        server, admin, _alice = await admin_and_user(self)
        for body in ({"token": "has space"}, {"token": "x" * 65}, {"length": 0},
                     {"length": "8"}, {"uses_allowed": -1}, {"uses_allowed": "1"},
                     {"expiry_time": 1}):
            resp = await server.request("POST", f"{T}/new", body, token=admin)
            self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_PARAM"), body)
        self.assertEqual((await server.request("GET", T, token=admin)).body,
                         {"registration_tokens": []})
        await server.request("POST", f"{T}/new", {"token": "dup"}, token=admin)
        again = await server.request("POST", f"{T}/new", {"token": "dup"}, token=admin)
        self.assertEqual(again.status, 400)
        bad_put = await server.request("PUT", f"{T}/dup", {"uses_allowed": True}, token=admin)
        self.assertEqual(bad_put.status, 400)
        missing = await server.request("PUT", f"{T}/nope", {"uses_allowed": 1}, token=admin)
        self.assertEqual(missing.status, 404)

    async def test_valid_filter_follows_uses_left(self) -> None:
        server, admin, _alice = await admin_and_user(self)
        await server.request("POST", f"{T}/new", {"token": "used-up", "uses_allowed": 0},
                             token=admin)
        await server.request("POST", f"{T}/new", {"token": "open"}, token=admin)
        valid = await server.request("GET", f"{T}?valid=true", token=admin)
        self.assertEqual([t["token"] for t in valid.body["registration_tokens"]], ["open"])
        invalid = await server.request("GET", f"{T}?valid=false", token=admin)
        self.assertEqual([t["token"] for t in invalid.body["registration_tokens"]], ["used-up"])
        validity = await server.request(
            "GET", f"{V3}/register/m.login.registration_token/validity?token=used-up")
        self.assertEqual(validity.body, {"valid": False})
