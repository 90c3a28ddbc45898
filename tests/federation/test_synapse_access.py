"""Roost and a real Synapse on loopback: history visibility and server ACLs over federation.

A Synapse that joins a `joined`-visibility Roost room late does not get the history from
before its join (what Synapse stores of those events is the redacted copy: no content),
and a Synapse the room's ACL denies cannot join, nor send into it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import psycopg2
from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.federation.synapse_harness import SynapseNode, start_synapse
from tests.federation.test_synapse_membership import _roost_membership, _synapse
from tests.federation.two_servers import V3, FedNode, eventually, eventually_slow, start_node
from tests.postgres_harness import admin_dsn


def _synapse_event_contents(synapse: SynapseNode, room_id: str) -> list[str]:
    """The JSON Synapse stored for every event of the room (read from its own database)."""
    params = psycopg2.extensions.parse_dsn(admin_dsn())
    params["dbname"] = synapse.database  # type: ignore[attr-defined]
    with psycopg2.connect(**params) as conn, conn.cursor() as cur:
        cur.execute("SELECT json FROM event_json WHERE room_id = %s", (room_id,))
        return [row[0] for row in cur.fetchall()]


async def _room(roost: FedNode, visibility: str, **extra: Any) -> str:
    body = await roost.request("POST", f"{V3}/createRoom", {
        "preset": "public_chat", "initial_state": [
            {"type": "m.room.history_visibility",
             "content": {"history_visibility": visibility}}], **extra}, user="bob")
    return str(body["room_id"])


async def _send(roost: FedNode, room_id: str, body: str, txn: str) -> None:
    await roost.request("PUT", f"{V3}/rooms/{quote(room_id)}/send/m.room.message/{txn}",
                        {"msgtype": "m.text", "body": body}, user="bob")


class SynapseHistoryVisibilityTests(TestCase):
    timeout = 300

    async def test_a_synapse_joining_a_joined_visibility_room_late_cannot_read_earlier_history(
        self,
    ) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        await roost.register("bob")
        alice, token = await threads.deferToThread(synapse.register, "alice")
        room_id = await _room(roost, "joined")
        for i in range(5):
            await _send(roost, room_id, f"secret before {i}", f"b{i}")
        join = f"{V3}/join/{quote(room_id)}?server_name={quote(roost.name)}"
        status, body = await _synapse(synapse, "POST", join, {}, token)
        self.assertEqual(status, 200, body)
        await eventually_slow(lambda: _joined(roost, room_id, alice))
        await _send(roost, room_id, "after the join", "a1")

        async def sees_after() -> bool:
            status, page = await _synapse(synapse, "GET", f"{V3}/rooms/{quote(room_id)}/messages"
                                          "?dir=b&limit=50", None, token)
            return status == 200 and "after the join" in _bodies(page["chunk"])

        await eventually_slow(sees_after)
        # Paging back makes Synapse backfill from Roost, the only other server.
        status, page = await _synapse(synapse, "GET", f"{V3}/rooms/{quote(room_id)}/messages"
                                      "?dir=b&limit=100", None, token)
        self.assertEqual(status, 200, page)
        self.assertFalse([b for b in _bodies(page["chunk"]) if b.startswith("secret")])
        stored = await threads.deferToThread(_synapse_event_contents, synapse, room_id)
        self.assertTrue(any("after the join" in s for s in stored))
        self.assertFalse([s for s in stored if "secret before" in s])
        # It did fetch them: the graph links up through redacted copies (no content).
        redacted = [e for e in map(json.loads, stored)
                    if e.get("type") == "m.room.message" and not e.get("content")]
        self.assertGreater(len(redacted), 0)


class SynapseServerAclTests(TestCase):
    timeout = 300

    async def test_a_synapse_the_acl_denies_cannot_join_or_send(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        await roost.register("bob")
        alice, token = await threads.deferToThread(synapse.register, "alice")
        host = synapse.name.rsplit(":", 1)[0]
        acl = {"type": "m.room.server_acl", "state_key": "",
               "content": {"allow": ["*"], "deny": [host], "allow_ip_literals": True}}
        denied = await _room(roost, "shared", initial_state=[acl])
        join = f"{V3}/join/{quote(denied)}?server_name={quote(roost.name)}"
        status, body = await _synapse(synapse, "POST", join, {}, token)
        self.assertEqual(status, 403, body)
        self.assertIsNone(await _roost_membership(roost, "bob", denied, alice))

        # Allowed first, then denied: its messages no longer reach Roost.
        room_id = await _room(roost, "shared")
        join = f"{V3}/join/{quote(room_id)}?server_name={quote(roost.name)}"
        status, body = await _synapse(synapse, "POST", join, {}, token)
        self.assertEqual(status, 200, body)
        await eventually_slow(lambda: _joined(roost, room_id, alice))
        await roost.request("PUT", f"{V3}/rooms/{quote(room_id)}/state/m.room.server_acl/",
                            acl["content"], user="bob")
        await _send(roost, room_id, "acl set", "acl")

        async def synapse_has_acl() -> bool:
            status, _ = await _synapse(synapse, "GET", f"{V3}/rooms/{quote(room_id)}/state/"
                                       "m.room.server_acl/", None, token)
            return status == 200

        await eventually_slow(synapse_has_acl)
        # Synapse does not stop its own user; Roost refuses what it sends.
        status, sent = await _synapse(synapse, "PUT", f"{V3}/rooms/{quote(room_id)}/send/"
                                      "m.room.message/x1",
                                      {"msgtype": "m.text", "body": "from a denied server"}, token)
        self.assertEqual(status, 200, sent)
        refused = await eventually(lambda: _refused_in_a_transaction(
            roost, synapse.name, sent["event_id"]), timeout_s=60)
        self.assertIn("ACL", refused)
        messages = await roost.request("GET", f"{V3}/rooms/{quote(room_id)}/messages?dir=b"
                                       "&limit=50", user="bob")
        self.assertNotIn("from a denied server", _bodies(messages["chunk"]))


async def _refused_in_a_transaction(roost: FedNode, origin: str, event_id: str) -> str | None:
    """The error Roost answered for `event_id` in one of `origin`'s transactions, if any."""
    assert roost.server is not None
    rows = await roost.server.hs.db.run("txns", lambda t: t.query(
        "SELECT response FROM federation_inbound_txns WHERE origin = %s", (origin,)))
    for (response,) in rows:
        found = json.loads(response).get("pdus", {}).get(event_id)
        if found is not None and "error" in found:
            return str(found["error"])
    return None


def _bodies(chunk: list[dict[str, Any]]) -> list[str]:
    return [e.get("content", {}).get("body", "") for e in chunk if e.get("type") == "m.room.message"]


async def _joined(roost: FedNode, room_id: str, user: str) -> bool:
    return await _roost_membership(roost, "bob", room_id, user) == "join"
