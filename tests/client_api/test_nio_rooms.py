"""matrix-nio drives the rooms scenario of the rooms issue against a real Roost.

Two users, a private room with an invite, the join, 20 messages, an edit, a
redaction, a thread reply, and /messages paging back to the room's creation.
nio runs on asyncio in a worker thread; Roost serves on the reactor thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nio import (
    AsyncClient,
    JoinResponse,
    MessageDirection,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomMessagesResponse,
    RoomRedactResponse,
    RoomSendResponse,
)
from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.server_harness import start_server


async def _scenario(base_url: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    alice, bob = AsyncClient(base_url, "alice"), AsyncClient(base_url, "bob")
    try:
        await alice.register("alice", "pw-alice")
        await bob.register("bob", "pw-bob")
        created = await alice.room_create(name="Plans", topic="weekend")
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        invited = await alice.room_invite(room_id, bob.user_id)
        seen["invited"] = isinstance(invited, RoomInviteResponse)
        joined = await bob.join(room_id)
        seen["joined"] = isinstance(joined, JoinResponse)

        sent = []
        for i in range(20):
            sender = alice if i % 2 == 0 else bob
            resp = await sender.room_send(room_id, "m.room.message",
                                          {"msgtype": "m.text", "body": f"message {i}"})
            assert isinstance(resp, RoomSendResponse), resp
            sent.append(resp.event_id)
        edit = await alice.room_send(room_id, "m.room.message", {
            "msgtype": "m.text", "body": "* message 0 (edited)",
            "m.new_content": {"msgtype": "m.text", "body": "message 0 (edited)"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": sent[0]},
        })
        seen["edit"] = isinstance(edit, RoomSendResponse)
        redacted = await bob.room_redact(room_id, sent[1], reason="typo")
        seen["redacted"] = isinstance(redacted, RoomRedactResponse)
        reply = await bob.room_send(room_id, "m.room.message", {
            "msgtype": "m.text", "body": "in a thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": sent[2]},
        })
        seen["thread_reply"] = isinstance(reply, RoomSendResponse)

        # Page back from the newest event to the room's creation, 7 at a time.
        events: list[dict[str, Any]] = []
        token = ""
        for _ in range(50):
            page = await alice.room_messages(room_id, start=token, limit=7,
                                             direction=MessageDirection.back)
            assert isinstance(page, RoomMessagesResponse), page
            events.extend(e.source for e in page.chunk)
            if not page.end or not page.chunk:
                break
            token = page.end
        seen["types"] = [e["type"] for e in events]
        by_id = {e["event_id"]: e for e in events}
        seen["first_message"] = by_id[sent[0]]
        seen["redacted_message"] = by_id[sent[1]]
        seen["thread_root"] = by_id[sent[2]]
        seen["bodies"] = [by_id[e]["content"].get("body") for e in sent]
        seen["room_id"] = room_id
    finally:
        await alice.close()
        await bob.close()
    return seen


class NioRoomTests(TestCase):
    async def test_nio_two_users_chat_edit_redact_thread_and_page_back(self) -> None:
        server = await start_server(self)
        seen = await threads.deferToThread(asyncio.run, _scenario(server.base_url))
        self.assertTrue(seen["invited"])
        self.assertTrue(seen["joined"])
        self.assertTrue(seen["edit"] and seen["redacted"] and seen["thread_reply"])
        types = seen["types"]
        self.assertEqual(types[-1], "m.room.create")  # paged all the way back
        self.assertEqual(types.count("m.room.message"), 22)  # 20 + edit + thread reply
        self.assertEqual(types.count("m.room.redaction"), 1)
        edited = seen["first_message"]["unsigned"]["m.relations"]["m.replace"]
        self.assertEqual(edited["content"]["m.new_content"]["body"], "message 0 (edited)")
        gone = seen["redacted_message"]
        self.assertEqual(gone["content"], {})
        because = gone["unsigned"]["redacted_because"]
        self.assertEqual(because["content"]["reason"], "typo")
        self.assertEqual(because["content"]["redacts"], gone["event_id"])  # v12: in content
        thread = seen["thread_root"]["unsigned"]["m.relations"]["m.thread"]
        self.assertEqual(thread["count"], 1)
        self.assertEqual(thread["latest_event"]["content"]["body"], "in a thread")
        expected = [f"message {i}" for i in range(20)]
        expected[0] = "message 0"
        expected[1] = None
        self.assertEqual(seen["bodies"], expected)
