"""GET /capabilities over real HTTP."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from roost.rooms.versions import KNOWN_ROOM_VERSIONS
from tests.server_harness import start_server

CAPS = "/_matrix/client/v3/capabilities"


class CapabilitiesTests(TestCase):
    async def test_capabilities_list_every_room_version_of_the_table(self) -> None:
        server = await start_server(self, rooms={"default_version": "11"})
        token = (await server.register("alice"))["access_token"]
        resp = await server.request("GET", CAPS, token=token)
        self.assertEqual(resp.status, 200, resp.body)
        caps = resp.body["capabilities"]
        self.assertEqual(caps["m.room_versions"]["default"], "11")
        self.assertEqual(set(caps["m.room_versions"]["available"]), set(KNOWN_ROOM_VERSIONS))
        self.assertEqual(set(caps["m.room_versions"]["available"].values()), {"stable"})
        self.assertEqual(caps["m.change_password"], {"enabled": True})
        self.assertEqual(caps["m.set_displayname"], {"enabled": True})
        self.assertEqual(caps["m.set_avatar_url"], {"enabled": True})
        self.assertEqual(caps["m.3pid_changes"], {"enabled": False})
        self.assertEqual(caps["m.get_login_token"], {"enabled": True})
        self.assertEqual(caps["m.profile_fields"], {"enabled": True})

    async def test_capabilities_need_a_token_and_guests_cannot_change_passwords(self) -> None:
        server = await start_server(self, registration={"enabled": True, "allow_guests": True})
        resp = await server.request("GET", CAPS)
        self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_MISSING_TOKEN"))
        guest = await server.request("POST", "/_matrix/client/v3/register?kind=guest", {})
        resp = await server.request("GET", CAPS, token=guest.body["access_token"])
        self.assertEqual(resp.body["capabilities"]["m.change_password"], {"enabled": False})
