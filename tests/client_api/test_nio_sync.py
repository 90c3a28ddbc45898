"""A matrix-nio client running its sync loop receives another user's messages, typing and
receipts. The test asserts delivery, not timing."""

from __future__ import annotations

import asyncio
from typing import Any

from nio import AsyncClient, ReceiptEvent, RoomMessageText, TypingNoticeEvent
from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.server_harness import start_server


async def _scenario(base_url: str) -> dict[str, Any]:
    alice, bob = AsyncClient(base_url, "alice"), AsyncClient(base_url, "bob")
    seen: dict[str, Any] = {"messages": [], "typing": [], "receipts": []}
    try:
        await alice.register("alice", "pw-a")
        await bob.register("bob", "pw-b")
        room_id = (await alice.room_create(invite=[bob.user_id])).room_id
        await bob.join(room_id)
        first = await bob.sync(timeout=0, full_state=True)
        seen["initial_rooms"] = list(first.rooms.join)

        def on_message(room: Any, event: RoomMessageText) -> None:
            seen["messages"].append(event.body)

        def on_typing(room: Any, event: TypingNoticeEvent) -> None:
            seen["typing"].append(list(event.users))

        def on_receipt(room: Any, event: ReceiptEvent) -> None:
            seen["receipts"].extend((r.user_id, r.event_id) for r in event.receipts)

        bob.add_event_callback(on_message, RoomMessageText)
        bob.add_ephemeral_callback(on_typing, TypingNoticeEvent)
        bob.add_ephemeral_callback(on_receipt, ReceiptEvent)

        async def alice_acts() -> str:
            await alice.room_typing(room_id, True, timeout=30000)
            sent = await alice.room_send(room_id, "m.room.message",
                                         {"msgtype": "m.text", "body": "hello bob"})
            await alice.update_receipt_marker(room_id, sent.event_id)
            return sent.event_id

        async def bob_syncs() -> None:
            for _ in range(40):
                await bob.sync(timeout=5000)
                if seen["messages"] and seen["typing"] and seen["receipts"]:
                    return

        sync_task = asyncio.create_task(bob_syncs())
        await asyncio.sleep(0.2)
        seen["sent_id"] = await alice_acts()
        await asyncio.wait_for(sync_task, 120)
        seen["room_id"] = room_id
    finally:
        await alice.close()
        await bob.close()
    return seen


class NioSyncTests(TestCase):
    async def test_nio_sync_loop_receives_messages_typing_and_receipts(self) -> None:
        server = await start_server(self)
        seen = await threads.deferToThread(asyncio.run, _scenario(server.base_url))
        self.assertIn(seen["room_id"], seen["initial_rooms"])
        self.assertIn("hello bob", seen["messages"])
        self.assertIn(["@alice:test.roost"], seen["typing"])
        self.assertIn(("@alice:test.roost", seen["sent_id"]), seen["receipts"])
