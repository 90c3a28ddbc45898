"""matrix-nio starts as a client does and meets push rules and notification counts.

A fresh login, a filter uploaded and used, an initial sync carrying the user's push
rules (`m.push_rules` account data, where nio and Element read them), a keyword rule
added with PUT /pushrules and announced by the next sync, then another user's plain
message, mention and keyword counted in `unread_notifications` (3, 2 of them
highlights), and a read receipt clearing both. nio runs on asyncio in a worker
thread; Roost serves on the reactor thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nio import (
    AsyncClient,
    LoginResponse,
    PushNotify,
    PushRuleKind,
    PushRulesEvent,
    PushSetTweak,
    RoomSendResponse,
    SetPushRuleResponse,
    SyncResponse,
    UploadFilterResponse,
)
from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.server_harness import start_server


def _rule_ids(event: PushRulesEvent, kind: str) -> list[str]:
    return [rule.id for rule in getattr(event.global_rules, kind)]


async def _sync_until(client: AsyncClient, filter_id: str, done: Any, rounds: int = 40) -> list[Any]:
    """Run the sync loop until `done()`; returns the account data events seen on the way."""
    account_data: list[Any] = []
    for _ in range(rounds):
        resp = await client.sync(timeout=3000, sync_filter=filter_id)
        assert isinstance(resp, SyncResponse), resp
        account_data.extend(resp.account_data_events)
        if done():
            break
    return account_data


async def _scenario(base_url: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    bob = AsyncClient(base_url, "bob")
    alice = AsyncClient(base_url, "alice")
    registrar = AsyncClient(base_url)
    try:
        await registrar.register("alice", "pw-alice-nio")
        await bob.register("bob", "pw-bob-nio")
        login = await alice.login("pw-alice-nio", device_name="nio start")
        seen["login"] = isinstance(login, LoginResponse)

        uploaded = await alice.upload_filter(room={"timeline": {"limit": 10}})
        assert isinstance(uploaded, UploadFilterResponse), uploaded
        filter_id = uploaded.filter_id
        first = await alice.sync(timeout=0, sync_filter=filter_id, full_state=True)
        assert isinstance(first, SyncResponse), first
        rules = [e for e in first.account_data_events if isinstance(e, PushRulesEvent)]
        seen["initial_override"] = _rule_ids(rules[-1], "override") if rules else None

        room_id = (await alice.room_create(invite=[bob.user_id])).room_id
        await bob.join(room_id)
        keyword = await alice.set_pushrule(
            "global", PushRuleKind.content, "pineapple", pattern="pineapple",
            actions=[PushNotify(), PushSetTweak("highlight", True)],
        )
        seen["keyword_rule_set"] = isinstance(keyword, SetPushRuleResponse)

        sent = []
        for content in (
            {"msgtype": "m.text", "body": "just chatting"},
            {"msgtype": "m.text", "body": "alice: look", "m.mentions": {"user_ids": [alice.user_id]}},
            {"msgtype": "m.text", "body": "I like pineapple"},
        ):
            resp = await bob.room_send(room_id, "m.room.message", content)
            assert isinstance(resp, RoomSendResponse), resp
            sent.append(resp.event_id)

        def counted() -> bool:
            room = alice.rooms.get(room_id)
            return room is not None and room.unread_notifications >= 3

        updates = await _sync_until(alice, filter_id, counted)
        room = alice.rooms[room_id]
        seen["counts"] = (room.unread_notifications, room.unread_highlights)
        new_rules = [e for e in updates if isinstance(e, PushRulesEvent)]
        seen["updated_content"] = _rule_ids(new_rules[-1], "content") if new_rules else None

        await alice.update_receipt_marker(room_id, sent[-1])
        await _sync_until(alice, filter_id,
                          lambda: (room.unread_notifications, room.unread_highlights) == (0, 0))
        seen["after_receipt"] = (room.unread_notifications, room.unread_highlights)
    finally:
        await registrar.close()
        await alice.close()
        await bob.close()
    return seen


class NioClientStartTests(TestCase):
    async def _seen(self) -> dict[str, Any]:
        server = await start_server(self)
        return await threads.deferToThread(asyncio.run, _scenario(server.base_url))

    async def test_nio_counts_another_users_message_mention_and_keyword_then_a_receipt_clears(
            self) -> None:
        seen = await self._seen()
        self.assertTrue(seen["login"])
        self.assertTrue(seen["keyword_rule_set"])
        self.assertEqual(seen["counts"], (3, 2))  # notifications, highlights
        self.assertEqual(seen["after_receipt"], (0, 0))

    async def test_nio_reads_push_rules_from_sync_account_data(self) -> None:
        seen = await self._seen()
        self.assertIsNotNone(seen["updated_content"], "the rule change never came in m.push_rules")
        self.assertIn("pineapple", seen["updated_content"])
        self.assertIsNotNone(seen["initial_override"], "no m.push_rules in the initial sync")
        self.assertIn(".m.rule.master", seen["initial_override"])
        self.assertIn(".m.rule.is_user_mention", seen["initial_override"])
