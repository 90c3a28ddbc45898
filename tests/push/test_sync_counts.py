"""unread_notifications and unread_thread_notifications in /sync: in the same response
as the event that changes them, reset by receipts (threaded too)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.client_api.test_rooms_http import Client, start_users
from tests.push.test_evaluator import mention, receipt
from tests.server_harness import q

THREADS = q(json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}}))


async def sync(client: Client, since: str | None = None, extra: str = "") -> Any:
    query = "?timeout=0" + (f"&since={since}" if since else "") + extra
    return await client.ok("GET", f"/sync{query}")


def counts(body: Any, room_id: str) -> tuple[int, int]:
    found = body["rooms"]["join"][room_id]["unread_notifications"]
    return found["notification_count"], found["highlight_count"]


class SyncCountTests(TestCase):
    async def test_the_count_arrives_with_the_event(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat")
        await bob.join(room)
        first = await sync(bob)
        self.assertEqual(counts(first, room), (0, 0))
        for i in range(3):
            await alice.send(room, f"m{i}")
            body = await sync(bob, first["next_batch"])
            timeline = body["rooms"]["join"][room]["timeline"]["events"]
            self.assertEqual(len(timeline), i + 1)
            self.assertEqual(counts(body, room), (i + 1, 0))
        await alice.send(room, content=mention("bob!", bob.user_id))
        body = await sync(bob, first["next_batch"])
        self.assertEqual(counts(body, room), (4, 1))
        self.assertEqual(counts(await sync(alice), room), (0, 0))

    async def test_a_long_poll_woken_by_a_mention_carries_its_highlight(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat")
        await bob.join(room)
        since = (await sync(bob))["next_batch"]
        waiting = defer.ensureDeferred(
            bob.ok("GET", f"/sync?timeout=20000&since={since}"))
        await alice.send(room, content=mention("wake up", bob.user_id))
        body = await waiting
        self.assertEqual(counts(body, room), (1, 1))

    async def test_a_receipt_resets_the_count_in_the_next_sync(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat")
        await bob.join(room)
        await alice.send(room, "1")
        last = await alice.send(room, "2")
        body = await sync(bob)
        self.assertEqual(counts(body, room), (2, 0))
        await receipt(bob, room, last)
        later = await sync(bob, body["next_batch"])
        self.assertEqual(counts(later, room), (0, 0))

    async def test_thread_counts_only_when_the_filter_asks(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat")
        await bob.join(room)
        root = await alice.send(room, "root")
        await alice.send(room, content={"msgtype": "m.text", "body": "in thread",
                                        "m.relates_to": {"rel_type": "m.thread",
                                                         "event_id": root}})
        plain = await sync(bob)
        self.assertEqual(counts(plain, room), (2, 0))
        self.assertNotIn("unread_thread_notifications", plain["rooms"]["join"][room])
        split = await sync(bob, extra=f"&filter={THREADS}")
        joined = split["rooms"]["join"][room]
        self.assertEqual(counts(split, room), (1, 0))
        self.assertEqual(joined["unread_thread_notifications"],
                         {root: {"notification_count": 1, "highlight_count": 0}})
        await receipt(bob, room, root, thread="main")
        after = await sync(bob, extra=f"&filter={THREADS}")
        self.assertEqual(counts(after, room), (0, 0))
        self.assertIn(root, after["rooms"]["join"][room]["unread_thread_notifications"])


class PushRulesAccountDataTests(TestCase):
    async def test_an_initial_sync_carries_the_default_rules(self) -> None:
        (alice,) = await start_users(self, "alice")
        body = await sync(alice)
        events = {e["type"]: e["content"] for e in body["account_data"]["events"]}
        override = [r["rule_id"] for r in events["m.push_rules"]["global"]["override"]]
        self.assertIn(".m.rule.is_user_mention", override)
        # Incremental syncs do not repeat it.
        later = await sync(alice, body["next_batch"])
        self.assertEqual(later["account_data"]["events"], [])
