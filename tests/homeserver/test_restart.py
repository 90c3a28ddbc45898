"""A restart keeps users, devices and sessions: tokens issued before it still work."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.client_api.test_login import password_login
from tests.server_harness import start_server

V3 = "/_matrix/client/v3"


class RestartTests(TestCase):
    async def test_users_devices_and_sessions_survive_a_restart(self) -> None:
        data_dir = self.mktemp()
        first = await start_server(self, data_dir=data_dir)
        reg = await first.register("alice", initial_device_display_name="laptop")
        login = await first.request("POST", V3 + "/login",
                                    password_login("alice", refresh_token=True))
        await first.stop()

        second = await start_server(self, dsn=first.hs.db.dsn, data_dir=data_dir)
        who = await second.request("GET", V3 + "/account/whoami", token=reg["access_token"])
        self.assertEqual((who.status, who.body.get("user_id")), (200, "@alice:test.roost"))
        devices = await second.request("GET", V3 + "/devices", token=reg["access_token"])
        self.assertEqual(len(devices.body["devices"]), 2)
        refreshed = await second.request("POST", V3 + "/refresh",
                                         {"refresh_token": login.body["refresh_token"]})
        self.assertEqual(refreshed.status, 200)
        again = await second.request("POST", V3 + "/login", password_login("alice"))
        self.assertEqual(again.status, 200)
