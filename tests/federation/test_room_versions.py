"""Rooms of the older versions between two Roost servers: created, joined over
federation (v1's event format, v3's ids, v5's key validity, v9's restricted-era
rules), talked in and redacted in, both ways."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from tests.federation.two_servers import V3, eventually, room_events, start_pair
from tests.server_harness import q


async def _bodies(node: Any, user: str, room_id: str) -> list[str]:
    return [e["content"].get("body") for e in await room_events(node, user, room_id)
            if e["type"] == "m.room.message"]


async def _joined(node: Any, user: str, room_id: str, member: str) -> bool:
    resp = await node.request("GET", f"{V3}/rooms/{q(room_id)}/joined_members", user=user,
                              expect=None)
    return resp.status == 200 and member in resp.body.get("joined", {})


class OlderRoomVersionsTests(TestCase):
    timeout = 240

    async def test_rooms_of_versions_1_3_5_and_9_work_across_two_servers(self) -> None:
        hs1, hs2 = await start_pair(self)
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        for version in ("1", "3", "5", "9"):
            created = await hs1.request("POST", V3 + "/createRoom",
                                        {"preset": "public_chat", "room_version": version},
                                        user="alice")
            room_id = created["room_id"]
            create = await hs1.request(
                "GET", f"{V3}/rooms/{q(room_id)}/state/m.room.create/", user="alice")
            self.assertEqual(create["room_version"], version)
            if version == "1":
                self.assertEqual(create["creator"], alice)
            await hs2.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(hs1.name)}", {},
                              user="bob")
            await eventually(lambda: _joined(hs1, "alice", room_id, bob))  # noqa: B023
            sent = await hs1.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/a{version}",
                                     {"msgtype": "m.text", "body": f"hi v{version}"}, user="alice")
            await hs2.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/b{version}",
                              {"msgtype": "m.text", "body": f"hello v{version}"}, user="bob")
            await eventually(lambda: _has(hs2, "bob", room_id, f"hi v{version}"))  # noqa: B023
            await eventually(lambda: _has(hs1, "alice", room_id, f"hello v{version}"))  # noqa: B023
            event_id = sent["event_id"]
            if version == "1":
                self.assertTrue(event_id.endswith(":" + hs1.name), event_id)
            elif version == "3":
                self.assertNotIn(":", event_id)
            else:
                self.assertNotIn("/", event_id)
                self.assertNotIn("+", event_id)
            await hs1.request("PUT", f"{V3}/rooms/{q(room_id)}/redact/{q(event_id)}/r{version}",
                              {}, user="alice")

            async def redacted_on_hs2() -> bool:
                resp = await hs2.request("GET", f"{V3}/rooms/{q(room_id)}/event/{q(event_id)}",  # noqa: B023
                                         user="bob", expect=None)
                return resp.status == 200 and "body" not in resp.body.get("content", {})

            await eventually(redacted_on_hs2)


async def _has(node: Any, user: str, room_id: str, body: str) -> bool:
    return body in await _bodies(node, user, room_id)
