"""The admin user endpoints: admins only, in the shapes operators' tools read."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.server_harness import q, start_server

A = "/_synapse/admin"
V3 = "/_matrix/client/v3"


async def admin_and_user(testcase: TestCase):
    server = await start_server(testcase)
    await server.hs.register_user("root", "pw-of-root", admin=True)
    login = await server.request("POST", V3 + "/login", {
        "type": "m.login.password", "password": "pw-of-root",
        "identifier": {"type": "m.id.user", "user": "root"}})
    alice = await server.register("alice")
    return server, login.body["access_token"], alice


class AdminGateTests(TestCase):
    async def test_a_non_admin_gets_403_on_every_admin_endpoint(self) -> None:
        server, _admin, alice = await admin_and_user(self)
        token = alice["access_token"]
        user = q("@alice:test.roost")
        for method, path, body in [
            ("GET", f"{A}/v2/users", None), ("GET", f"{A}/v2/users/{user}", None),
            ("PUT", f"{A}/v2/users/{user}", {"admin": True}),
            ("POST", f"{A}/v1/deactivate/{user}", {}),
            ("POST", f"{A}/v1/reset_password/{user}", {"new_password": "x"}),
            ("GET", f"{A}/v1/users/{user}/joined_rooms", None),
            ("GET", f"{A}/v2/users/{user}/devices", None),
            ("GET", f"{A}/v1/whois/{q('@root:test.roost')}", None),
            ("GET", f"{A}/v1/rooms", None),
        ]:
            resp = await server.request(method, path, body, token=token)
            self.assertEqual((resp.status, resp.body.get("errcode")), (403, "M_FORBIDDEN"),
                             (method, path))
        self.assertFalse(await server.hs.accounts.is_admin("@alice:test.roost"))

    async def test_every_admin_route_refuses_a_non_admin(self) -> None:
        """Each route under /_synapse/admin (but the shared-secret registration and the
        version, which need no account) answers a non-admin's token with 403."""
        server, _admin, alice = await admin_and_user(self)
        open_routes = {"/_synapse/admin/v1/register", "/_synapse/admin/v1/server_version"}
        samples = {"user_id": q("@bob:test.roost"), "room_id": q("!r:test.roost"),
                   "device_id": "D", "delete_id": "x", "token": "t", "report_id": "1",
                   "server_name": "test.roost", "media_id": "abcdefgh"}
        checked = 0
        for route in server.hs.client_site.resource.children[b"_synapse"]._router.routes:
            path = route.path
            if not path.startswith("/_synapse/admin") or path in open_routes:
                continue
            for name, value in samples.items():
                path = path.replace("{" + name + "}", value)
            self.assertNotIn("{", path, f"no sample value for {route.path}")
            resp = await server.request(route.method, path, {}, token=alice["access_token"])
            self.assertEqual((resp.status, resp.body.get("errcode")), (403, "M_FORBIDDEN"),
                             f"{route.method} {route.path}")
            checked += 1
        self.assertGreaterEqual(checked, 30)

    async def test_admin_rights_are_read_from_storage_not_the_token(self) -> None:
        server, admin, _alice = await admin_and_user(self)
        self.assertEqual((await server.request("GET", f"{A}/v2/users", token=admin)).status, 200)
        await server.hs.db.run("demote", lambda txn: txn.execute(
            "UPDATE users SET is_admin = FALSE WHERE user_id = '@root:test.roost'"))
        resp = await server.request("GET", f"{A}/v2/users", token=admin)
        self.assertEqual(resp.status, 403)

    async def test_no_token_is_401(self) -> None:
        server, _admin, _alice = await admin_and_user(self)
        resp = await server.request("GET", f"{A}/v2/users")
        self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_MISSING_TOKEN"))


class AdminUserTests(TestCase):
    async def test_list_users_pages_filters_and_counts(self) -> None:
        server, admin, _alice = await admin_and_user(self)
        for name in ("bob", "carol", "dave"):
            await server.register(name)
        page = await server.request("GET", f"{A}/v2/users?limit=2", token=admin)
        self.assertEqual(page.body["total"], 5)
        self.assertEqual([u["name"] for u in page.body["users"]],
                         ["@alice:test.roost", "@bob:test.roost"])
        self.assertEqual(page.body["next_token"], "2")
        rest = await server.request("GET", f"{A}/v2/users?from=2&limit=10", token=admin)
        self.assertEqual(len(rest.body["users"]), 3)
        self.assertNotIn("next_token", rest.body)
        named = await server.request("GET", f"{A}/v2/users?name=car", token=admin)
        self.assertEqual([u["name"] for u in named.body["users"]], ["@carol:test.roost"])
        admins = await server.request("GET", f"{A}/v2/users?admins=true", token=admin)
        self.assertEqual([u["name"] for u in admins.body["users"]], ["@root:test.roost"])
        for bad in ("limit=-1", "from=-5", "dir=x", "order_by=password", "limit=ten"):
            resp = await server.request("GET", f"{A}/v2/users?{bad}", token=admin)
            self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_PARAM"), bad)

    async def test_put_creates_then_changes_a_user(self) -> None:
        server, admin, _alice = await admin_and_user(self)
        path = f"{A}/v2/users/{q('@erin:test.roost')}"
        made = await server.request("PUT", path, {"password": "pw-erin", "displayname": "Erin"},
                                    token=admin)
        self.assertEqual(made.status, 201, made.body)
        self.assertEqual((made.body["name"], made.body["displayname"], made.body["admin"]),
                         ("@erin:test.roost", "Erin", False))
        changed = await server.request("PUT", path, {"admin": True, "displayname": "E."},
                                       token=admin)
        self.assertEqual(changed.status, 200)
        self.assertEqual((changed.body["admin"], changed.body["displayname"]), (True, "E."))
        got = await server.request("GET", path, token=admin)
        self.assertEqual(got.body["admin"], True)
        self.assertNotIn("avatar_url", got.body)  # absent, not null
        bad = await server.request("PUT", path, {"admin": "yes"}, token=admin)
        self.assertEqual((bad.status, bad.body["errcode"]), (400, "M_BAD_JSON"))
        remote = await server.request("PUT", f"{A}/v2/users/{q('@x:elsewhere')}", {},
                                      token=admin)
        self.assertEqual(remote.status, 400)
        missing = await server.request("GET", f"{A}/v2/users/{q('@nobody:test.roost')}",
                                       token=admin)
        self.assertEqual((missing.status, missing.body["errcode"]), (404, "M_NOT_FOUND"))

    async def test_deactivate_ends_sessions_and_reset_password_logs_out(self) -> None:
        server, admin, alice = await admin_and_user(self)
        user = q("@alice:test.roost")
        reset = await server.request("POST", f"{A}/v1/reset_password/{user}",
                                     {"new_password": "new-pw-alice"}, token=admin)
        self.assertEqual(reset.status, 200, reset.body)
        who = await server.request("GET", V3 + "/account/whoami", token=alice["access_token"])
        self.assertEqual(who.status, 401)
        login = await server.request("POST", V3 + "/login", {
            "type": "m.login.password", "password": "new-pw-alice",
            "identifier": {"type": "m.id.user", "user": "alice"}})
        self.assertEqual(login.status, 200)
        gone = await server.request("POST", f"{A}/v1/deactivate/{user}", {"erase": False},
                                    token=admin)
        self.assertEqual(gone.status, 200, gone.body)
        who = await server.request("GET", V3 + "/account/whoami",
                                   token=login.body["access_token"])
        self.assertEqual(who.status, 401)
        got = await server.request("GET", f"{A}/v2/users/{user}", token=admin)
        self.assertTrue(got.body["deactivated"])
        erased = await server.hs.db.run("erased", lambda txn: txn.query(
            "SELECT user_id FROM erased_users"))
        self.assertEqual(erased, [])  # erase: false erases nothing
        listed = await server.request("GET", f"{A}/v2/users", token=admin)
        self.assertNotIn("@alice:test.roost", [u["name"] for u in listed.body["users"]])

    async def test_deactivate_with_erase_records_the_user_as_erased(self) -> None:
        server, admin, _alice = await admin_and_user(self)
        user = q("@alice:test.roost")
        bad = await server.request("POST", f"{A}/v1/deactivate/{user}", {"erase": "yes"},
                                   token=admin)
        self.assertEqual(bad.status, 400)
        gone = await server.request("POST", f"{A}/v1/deactivate/{user}", {"erase": True},
                                    token=admin)
        self.assertEqual(gone.status, 200, gone.body)
        erased = await server.hs.db.run("erased", lambda txn: txn.query(
            "SELECT user_id FROM erased_users"))
        self.assertEqual(erased, [("@alice:test.roost",)])

    async def test_whois_joined_rooms_and_devices(self) -> None:
        server, admin, alice = await admin_and_user(self)
        token = alice["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {}, token=token)).body["room_id"]
        user = q("@alice:test.roost")
        rooms = await server.request("GET", f"{A}/v1/users/{user}/joined_rooms", token=admin)
        self.assertEqual(rooms.body, {"joined_rooms": [room], "total": 1})
        devices = await server.request("GET", f"{A}/v2/users/{user}/devices", token=admin)
        self.assertEqual([d["device_id"] for d in devices.body["devices"]], [alice["device_id"]])
        whois = await server.request("GET", f"{A}/v1/whois/{user}", token=admin)
        self.assertEqual(list(whois.body["devices"]), [alice["device_id"]])
        own = await server.request("GET", f"{V3}/admin/whois/{user}", token=token)
        self.assertEqual(own.status, 200)  # a user may ask about themselves
        device = f"{A}/v2/users/{user}/devices/{alice['device_id']}"
        self.assertEqual((await server.request("DELETE", device, token=admin)).status, 200)
        self.assertEqual((await server.request("GET", V3 + "/account/whoami",
                                               token=token)).status, 401)
        self.assertEqual((await server.request("GET", device, token=admin)).status, 404)
