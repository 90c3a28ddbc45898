"""Devices, password change and deactivation, with password UIA, over real HTTP."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from roost.homeserver.wiring import LAST_SEEN_FLUSH_S
from roost.storage.devices import DeviceStore
from tests.client_api.test_login import password_login
from tests.server_harness import start_server

V3 = "/_matrix/client/v3"


def password_auth(user: str = "alice", password: str = "hunter2-pw") -> dict:
    return {"type": "m.login.password", "password": password,
            "identifier": {"type": "m.id.user", "user": user}}


class DeviceTests(TestCase):
    async def _alice_with_two_devices(self, server) -> tuple[dict, dict]:
        reg = await server.register("alice", initial_device_display_name="laptop")
        phone = await server.request("POST", V3 + "/login",
                                     password_login("alice", device_id="PHONE"))
        return reg, phone.body

    async def test_list_get_and_rename_devices(self) -> None:
        server = await start_server(self)
        reg, phone = await self._alice_with_two_devices(server)
        token = reg["access_token"]
        listed = await server.request("GET", V3 + "/devices", token=token)
        names = {d["device_id"]: d.get("display_name") for d in listed.body["devices"]}
        self.assertEqual(names, {reg["device_id"]: "laptop", "PHONE": None})
        # Optional fields never known are left out, never sent as null (the spec's schema).
        for device in listed.body["devices"]:
            self.assertNotIn(None, device.values(), device)
        got = await server.request("GET", V3 + "/devices/PHONE", token=token)
        self.assertNotIn("display_name", got.body)
        put = await server.request("PUT", V3 + "/devices/PHONE", {"display_name": "pixel"},
                                   token=token)
        self.assertEqual(put.status, 200)
        got = await server.request("GET", V3 + "/devices/PHONE", token=token)
        self.assertEqual(got.body["display_name"], "pixel")

    async def test_last_seen_time_and_address_follow_requests_and_are_written_in_batches(
            self) -> None:
        clock = task.Clock()
        clock.advance(1_700_000_000)
        server = await start_server(self, clock=clock)
        reg, phone = await self._alice_with_two_devices(server)
        writes: list[str] = []
        server.hs.db.observer = lambda desc, _s, _ok: writes.append(desc)
        self.addCleanup(setattr, server.hs.db, "observer", None)
        clock.advance(5)
        for _ in range(3):
            await server.request("GET", V3 + "/account/whoami", token=phone["access_token"])

        def by_id(devices: list[Any]) -> dict[str, Any]:
            return {d["device_id"]: d for d in devices}

        listed = by_id((await server.request("GET", V3 + "/devices",
                                             token=reg["access_token"])).body["devices"])
        # This process shows the request at once, before anything is written.
        self.assertEqual(listed["PHONE"]["last_seen_ts"], 1_700_000_005_000)
        self.assertIsInstance(listed["PHONE"]["last_seen_ip"], str)
        self.assertEqual(listed[reg["device_id"]]["last_seen_ts"], 1_700_000_005_000)
        got = (await server.request("GET", V3 + "/devices/PHONE", token=reg["access_token"])).body
        self.assertEqual(got, listed["PHONE"])
        self.assertNotIn("flush_last_seen", writes)  # no write per request
        stored = await DeviceStore(server.hs.db).get_device(phone["user_id"], "PHONE")
        assert stored is not None
        self.assertEqual(stored.last_seen_ts, 1_700_000_000_000)  # the login's, as stored
        clock.advance(LAST_SEEN_FLUSH_S)  # one statement for everything gathered
        for _ in range(100):
            if "flush_last_seen" in writes:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(writes.count("flush_last_seen"), 1)
        stored = await DeviceStore(server.hs.db).get_device(phone["user_id"], "PHONE")
        assert stored is not None
        self.assertEqual((stored.last_seen_ts, stored.last_seen_ip),
                         (1_700_000_005_000, listed["PHONE"]["last_seen_ip"]))

    async def test_unknown_device_is_not_found(self) -> None:
        server = await start_server(self)
        reg = await server.register("alice")
        for method, body in (("GET", None), ("PUT", {"display_name": "x"}), ("DELETE", {})):
            resp = await server.request(method, V3 + "/devices/NOPE", body, token=reg["access_token"])
            self.assertEqual((resp.status, resp.body["errcode"]), (404, "M_NOT_FOUND"), method)

    async def test_another_users_device_is_not_visible(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        bob = await server.register("bob")
        resp = await server.request("GET", V3 + "/devices/" + alice["device_id"],
                                    token=bob["access_token"])
        self.assertEqual(resp.status, 404)

    async def test_delete_device_needs_password_and_revokes_its_token(self) -> None:
        server = await start_server(self)
        reg, phone = await self._alice_with_two_devices(server)
        token = reg["access_token"]
        challenge = await server.request("DELETE", V3 + "/devices/PHONE", {}, token=token)
        self.assertEqual(challenge.status, 401)
        self.assertEqual(challenge.body["flows"], [{"stages": ["m.login.password"]}])
        wrong = await server.request(
            "DELETE", V3 + "/devices/PHONE",
            {"auth": {**password_auth(password="bad"), "session": challenge.body["session"]}},
            token=token,
        )
        self.assertEqual((wrong.status, wrong.body["errcode"]), (401, "M_FORBIDDEN"))
        still = await server.request("GET", V3 + "/account/whoami", token=phone["access_token"])
        self.assertEqual(still.status, 200)
        ok = await server.request(
            "DELETE", V3 + "/devices/PHONE",
            {"auth": {**password_auth(), "session": challenge.body["session"]}}, token=token,
        )
        self.assertEqual(ok.status, 200, ok.body)
        gone = await server.request("GET", V3 + "/account/whoami", token=phone["access_token"])
        self.assertEqual(gone.status, 401)

    async def test_a_session_begun_for_one_device_cannot_delete_another(self) -> None:
        server = await start_server(self)
        reg, phone = await self._alice_with_two_devices(server)
        await server.request("POST", V3 + "/login", password_login("alice", device_id="TABLET"))
        token = reg["access_token"]
        challenge = await server.request("DELETE", V3 + "/devices/PHONE", {}, token=token)
        session = challenge.body["session"]
        other = await server.request("DELETE", V3 + "/devices/TABLET",
                                     {"auth": {**password_auth(), "session": session}}, token=token)
        self.assertEqual((other.status, other.body["errcode"]), (403, "M_FORBIDDEN"))
        bulk = await server.request("POST", V3 + "/delete_devices",
                                    {"devices": ["TABLET"], "auth": {**password_auth(),
                                                                      "session": session}},
                                    token=token)
        self.assertEqual((bulk.status, bulk.body["errcode"]), (403, "M_FORBIDDEN"))
        listed = await server.request("GET", V3 + "/devices", token=token)
        self.assertEqual(len(listed.body["devices"]), 3)
        # A bulk session begun for one list of devices cannot delete another list.
        first = await server.request("POST", V3 + "/delete_devices", {"devices": ["PHONE"]},
                                     token=token)
        swapped = await server.request("POST", V3 + "/delete_devices", {
            "devices": ["TABLET"], "auth": {**password_auth(), "session": first.body["session"]}},
            token=token)
        self.assertEqual((swapped.status, swapped.body["errcode"]), (403, "M_FORBIDDEN"))
        ok = await server.request("DELETE", V3 + "/devices/PHONE",
                                  {"auth": {**password_auth(), "session": session}}, token=token)
        self.assertEqual(ok.status, 200, ok.body)
        listed = await server.request("GET", V3 + "/devices", token=token)
        self.assertEqual({d["device_id"] for d in listed.body["devices"]},
                         {reg["device_id"], "TABLET"})

    async def test_password_of_another_user_does_not_authorise(self) -> None:
        server = await start_server(self)
        reg = await server.register("alice")
        await server.register("bob")
        resp = await server.request(
            "DELETE", V3 + "/devices/" + reg["device_id"],
            {"auth": password_auth(user="bob")}, token=reg["access_token"],
        )
        self.assertEqual(resp.status, 401)

    async def test_delete_devices_in_bulk(self) -> None:
        server = await start_server(self)
        reg, phone = await self._alice_with_two_devices(server)
        token = reg["access_token"]
        resp = await server.request("POST", V3 + "/delete_devices",
                                    {"devices": ["PHONE"], "auth": password_auth()}, token=token)
        self.assertEqual(resp.status, 200)
        listed = await server.request("GET", V3 + "/devices", token=token)
        self.assertEqual([d["device_id"] for d in listed.body["devices"]], [reg["device_id"]])
        bad = await server.request("POST", V3 + "/delete_devices", {"auth": password_auth()},
                                   token=token)
        self.assertEqual((bad.status, bad.body["errcode"]), (400, "M_MISSING_PARAM"))
        bad = await server.request("POST", V3 + "/delete_devices",
                                   {"devices": "PHONE", "auth": password_auth()}, token=token)
        self.assertEqual((bad.status, bad.body["errcode"]), (400, "M_BAD_JSON"))


class AccountTests(TestCase):
    async def test_change_password_logs_out_other_devices_only(self) -> None:
        server = await start_server(self)
        reg = await server.register("alice")
        phone = await server.request("POST", V3 + "/login", password_login("alice"))
        resp = await server.request(
            "POST", V3 + "/account/password",
            {"new_password": "new-secret", "auth": password_auth()}, token=reg["access_token"],
        )
        self.assertEqual(resp.status, 200, resp.body)
        mine = await server.request("GET", V3 + "/account/whoami", token=reg["access_token"])
        self.assertEqual(mine.status, 200)
        theirs = await server.request("GET", V3 + "/account/whoami",
                                      token=phone.body["access_token"])
        self.assertEqual(theirs.status, 401)
        old = await server.request("POST", V3 + "/login", password_login("alice"))
        self.assertEqual(old.status, 403)
        new = await server.request("POST", V3 + "/login", password_login("alice", "new-secret"))
        self.assertEqual(new.status, 200)

    async def test_change_password_can_keep_devices(self) -> None:
        server = await start_server(self)
        reg = await server.register("alice")
        phone = await server.request("POST", V3 + "/login", password_login("alice"))
        await server.request(
            "POST", V3 + "/account/password",
            {"new_password": "n", "logout_devices": False, "auth": password_auth()},
            token=reg["access_token"],
        )
        theirs = await server.request("GET", V3 + "/account/whoami",
                                      token=phone.body["access_token"])
        self.assertEqual(theirs.status, 200)

    async def test_change_password_needs_new_password_and_auth(self) -> None:
        server = await start_server(self)
        reg = await server.register("alice")
        resp = await server.request("POST", V3 + "/account/password", {"auth": password_auth()},
                                    token=reg["access_token"])
        self.assertEqual(resp.body["errcode"], "M_MISSING_PARAM")
        resp = await server.request("POST", V3 + "/account/password", {"new_password": "x"},
                                    token=reg["access_token"])
        self.assertEqual(resp.status, 401)
        login = await server.request("POST", V3 + "/login", password_login("alice"))
        self.assertEqual(login.status, 200)

    async def test_deactivate_ends_every_session_and_blocks_login(self) -> None:
        server = await start_server(self)
        reg = await server.register("alice")
        resp = await server.request("POST", V3 + "/account/deactivate",
                                    {"auth": password_auth()}, token=reg["access_token"])
        self.assertEqual(resp.status, 200, resp.body)
        who = await server.request("GET", V3 + "/account/whoami", token=reg["access_token"])
        self.assertEqual(who.status, 401)
        login = await server.request("POST", V3 + "/login", password_login("alice"))
        self.assertEqual(login.status, 403)
        again = await server.request("POST", V3 + "/register",
                                     {"username": "alice", "password": "x",
                                      "auth": {"type": "m.login.dummy"}})
        self.assertEqual(again.body["errcode"], "M_USER_IN_USE")

    async def test_whoami(self) -> None:
        server = await start_server(self)
        reg = await server.register("alice")
        who = await server.request("GET", V3 + "/account/whoami", token=reg["access_token"])
        self.assertEqual(who.body, {"user_id": "@alice:test.roost",
                                    "device_id": reg["device_id"], "is_guest": False})


class DeactivationLeavesRoomsTests(TestCase):
    async def test_deactivated_user_leaves_every_room(self) -> None:
        server = await start_server(self)
        alice = await server.register("alice")
        bob = await server.register("bob")
        created = await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                       token=alice["access_token"])
        room = created.body["room_id"]
        await server.request("POST", V3 + f"/rooms/{room}/join", {}, token=bob["access_token"])
        resp = await server.request("POST", V3 + "/account/deactivate",
                                    {"auth": password_auth(user="bob")}, token=bob["access_token"])
        self.assertEqual(resp.status, 200, resp.body)
        members = await server.request("GET", V3 + f"/rooms/{room}/joined_members",
                                       token=alice["access_token"])
        self.assertEqual(list(members.body["joined"]), ["@alice:test.roost"])
