"""matrix-nio pages a room's history with the tokens /sync gave it.

A client that starts with a short timeline pages back from the initial sync's
`prev_batch` to the room's creation; after a gap (an incremental sync whose
timeline is `limited`) it fills exactly the missing events with
`from=prev_batch&to=<its previous since>`; and it reads forward from a
`prev_batch`. nio runs on asyncio in a worker thread; Roost serves on the
reactor thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nio import (
    AsyncClient,
    MessageDirection,
    RoomMessagesResponse,
    RoomSendResponse,
    SyncResponse,
)
from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.server_harness import start_server

_SHORT = {"room": {"timeline": {"limit": 5}}}


async def _send(client: AsyncClient, room_id: str, body: str) -> str:
    resp = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
    assert isinstance(resp, RoomSendResponse), resp
    return resp.event_id


async def _page(client: AsyncClient, room_id: str, start: str, direction: MessageDirection,
                end: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
    """Every event /messages gives from `start` (to `end`), page after page, as it gives them."""
    events: list[dict[str, Any]] = []
    token = start
    for _ in range(100):
        page = await client.room_messages(room_id, start=token, end=end, limit=limit,
                                          direction=direction)
        assert isinstance(page, RoomMessagesResponse), page
        events.extend(e.source for e in page.chunk)
        if not page.end or not page.chunk:
            break
        token = page.end
    return events


def _bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


async def _scenario(base_url: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    alice, bob = AsyncClient(base_url, "alice"), AsyncClient(base_url, "bob")
    try:
        await alice.register("alice", "pw-alice")
        await bob.register("bob", "pw-bob")
        room_id = (await alice.room_create(invite=[bob.user_id])).room_id
        await bob.join(room_id)
        for i in range(30):
            await _send(alice if i % 2 == 0 else bob, room_id, f"before {i}")

        # Bob's first sync: the newest five events and a token for what came before.
        first = await bob.sync(timeout=0, sync_filter=_SHORT, full_state=True)
        assert isinstance(first, SyncResponse), first
        timeline = first.rooms.join[room_id].timeline
        seen["initial"] = {"limited": timeline.limited, "prev_batch": timeline.prev_batch,
                           "bodies": _bodies([e.source for e in timeline.events])}
        back = await _page(bob, room_id, timeline.prev_batch, MessageDirection.back, limit=7)
        seen["back_types"] = [e["type"] for e in back]
        seen["back_ids"] = [e["event_id"] for e in back]
        seen["back_bodies"] = _bodies(back)

        # Forward from that same token: the five events the sync showed, nothing else.
        forward = await _page(bob, room_id, timeline.prev_batch, MessageDirection.front, limit=3)
        seen["forward_bodies"] = _bodies(forward)

        # A gap: twelve messages arrive while Bob is away; his next sync shows five.
        since = first.next_batch
        for i in range(12):
            await _send(alice, room_id, f"during {i}")
        second = await bob.sync(timeout=0, sync_filter=_SHORT, since=since)
        assert isinstance(second, SyncResponse), second
        gap_timeline = second.rooms.join[room_id].timeline
        seen["gap"] = {"limited": gap_timeline.limited,
                       "bodies": _bodies([e.source for e in gap_timeline.events])}
        filled = await _page(bob, room_id, gap_timeline.prev_batch, MessageDirection.back,
                             end=since, limit=4)
        seen["filled_bodies"] = _bodies(filled)
    finally:
        await alice.close()
        await bob.close()
    return seen


class NioPaginationTests(TestCase):
    async def test_nio_pages_history_and_fills_a_gap_with_the_tokens_sync_gave(self) -> None:
        server = await start_server(self)
        seen = await threads.deferToThread(asyncio.run, _scenario(server.base_url))
        before = [f"before {i}" for i in range(30)]

        initial = seen["initial"]
        self.assertTrue(initial["limited"])
        self.assertEqual(initial["bodies"], before[-5:])
        # Back from prev_batch: everything older, newest first, once each, to the creation.
        self.assertEqual(seen["back_bodies"], list(reversed(before[:-5])))
        self.assertEqual(seen["back_types"][-1], "m.room.create")
        self.assertEqual(len(seen["back_ids"]), len(set(seen["back_ids"])))
        # Forward from prev_batch: what the sync showed, in order (the gap came later).
        self.assertEqual(seen["forward_bodies"], before[-5:])

        during = [f"during {i}" for i in range(12)]
        self.assertTrue(seen["gap"]["limited"])
        self.assertEqual(seen["gap"]["bodies"], during[-5:])
        # from=prev_batch to=the old since: exactly the seven events Bob missed.
        self.assertEqual(seen["filled_bodies"], list(reversed(during[:-5])))
