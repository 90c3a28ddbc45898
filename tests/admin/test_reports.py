"""Event reports read and deleted through the admin API."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.admin.test_users import V3, A, admin_and_user
from tests.server_harness import q

R = f"{A}/v1/event_reports"


class AdminReportTests(TestCase):
    async def test_list_read_and_delete_event_reports(self) -> None:
        server, admin, alice = await admin_and_user(self)
        token = alice["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {"name": "Lobby"},
                                     token=token)).body["room_id"]
        event_ids = []
        for n in range(3):
            sent = await server.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/{n}",
                                        {"msgtype": "m.text", "body": f"spam {n}"}, token=token)
            event_ids.append(sent.body["event_id"])
            made = await server.request("POST", f"{V3}/rooms/{q(room)}/report/{q(sent.body['event_id'])}",
                                        {"reason": f"spam {n}"}, token=token)
            self.assertEqual(made.status, 200, made.body)
        listed = await server.request("GET", f"{R}?limit=2", token=admin)
        self.assertEqual(listed.status, 200, listed.body)
        self.assertEqual(listed.body["total"], 3)
        self.assertEqual(listed.body["next_token"], 2)
        newest = listed.body["event_reports"][0]
        self.assertEqual((newest["event_id"], newest["reason"], newest["user_id"],
                          newest["room_id"], newest["name"], newest["sender"]),
                         (event_ids[2], "spam 2", "@alice:test.roost", room, "Lobby",
                          "@alice:test.roost"))
        one = await server.request("GET", f"{R}/{newest['id']}", token=admin)
        self.assertEqual(one.body["event_json"]["content"]["body"], "spam 2")
        self.assertEqual((await server.request("DELETE", f"{R}/{newest['id']}",
                                               token=admin)).status, 200)
        self.assertEqual((await server.request("GET", f"{R}/{newest['id']}",
                                               token=admin)).status, 404)
        self.assertEqual((await server.request("GET", R, token=admin)).body["total"], 2)
        bad = await server.request("GET", f"{R}/abc", token=admin)
        self.assertEqual((bad.status, bad.body["errcode"]), (400, "M_INVALID_PARAM"))
        self.assertEqual((await server.request("GET", R, token=token)).status, 403)
        negative = await server.request("GET", f"{R}?limit=-1", token=admin)
        self.assertEqual(negative.status, 400)
