"""Rooms of the older versions between two Roost servers: created, joined over
federation (v1's event format, v3's ids, v5's key validity, v9's restricted-era
rules), talked in and redacted in, both ways."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from roost.rooms.builder import finalize_pdu
from roost.rooms.engine import NewEvent
from roost.rooms.versions import get_room_version
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


class V1EndpointTests(TestCase):
    """The v1 forms of send_join, send_leave and invite: answers are [200, body]."""

    timeout = 120

    async def test_v1_send_join_send_leave_and_invite(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        bob = await hs2.register("bob")
        carol = await hs2.register("carol")
        assert hs1.server and hs2.server
        client = hs2.server.hs.federation.client
        key = hs2.server.hs.local_key.signing_key
        room_id = (await hs1.request("POST", V3 + "/createRoom",
                                     {"preset": "public_chat", "room_version": "1"},
                                     user="alice"))["room_id"]

        async def membership(user_id: str, kind: str) -> dict:
            template = await client.get_json(
                hs1.name, f"/_matrix/federation/v1/make_{kind}/{q(room_id)}/{q(user_id)}",
                {"ver": ["1"]} if kind == "join" else None)
            self.assertEqual(template["room_version"], "1")
            pdu = {k: v for k, v in template["event"].items() if k != "event_id"}
            event_id, signed = finalize_pdu(pdu, get_room_version("1"), hs2.name, key)
            self.assertTrue(event_id.endswith(":" + hs2.name))
            answer = await client.put_json(
                hs1.name, f"/_matrix/federation/v1/send_{kind}/{q(room_id)}/{q(event_id)}",
                signed)
            self.assertEqual(answer[0], 200)
            return answer[1]

        body = await membership(bob, "join")
        self.assertEqual(set(body), {"origin", "state", "auth_chain"})
        self.assertIn("m.room.create", [e["type"] for e in body["state"]])
        await eventually(lambda: _joined(hs1, "alice", room_id, bob))
        self.assertEqual(await membership(bob, "leave"), {})

        # v1 invite: hs1 invites carol of hs2 in its v1 room; the body is the event itself.
        invite = await hs1.server.hs.engine.append(room_id, NewEvent(
            f"@alice:{hs1.name}", "m.room.member", {"membership": "invite"}, carol))
        answer = await hs1.server.hs.federation.client.put_json(
            hs2.name, f"/_matrix/federation/v1/invite/{q(room_id)}/{q(invite.event_id)}",
            dict(invite.pdu))
        self.assertEqual(answer[0], 200)
        self.assertIn(hs2.name, answer[1]["event"]["signatures"])
