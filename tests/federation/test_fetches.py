"""Events fetched from other servers are counted, and a gap is fetched once per event.

`CounterTests` checks `EventFetches` alone. `GapTests` runs two real servers:
events the first server never sends to the second (its sender is made to skip
them, as if they were lost) leave a gap that the second server fills when the
next event arrives, and every event of the gap is fetched exactly once.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer
from twisted.trial.unittest import TestCase

from roost.federation.fetches import EventFetches
from roost.storage.federation_outbound import FederationOutboundStore
from tests.federation.two_servers import V3, FedNode, eventually, room_events, start_pair
from tests.server_harness import q


class CounterTests(TestCase):
    def test_counts_by_endpoint_and_again(self) -> None:
        registry = CollectorRegistry()
        fetches = EventFetches(registry)
        fetches.requested("event")
        fetches.received("event", ["$a"])
        fetches.requested("get_missing_events")
        fetches.received("get_missing_events", ["$b", "$c", "$b"])  # one answer: $b once
        fetches.received("backfill", ["$a"])
        self.assertEqual((fetches.fetched_total, fetches.fetched_again_total), (4, 1))
        self.assertEqual([fetches.times_fetched(e) for e in ("$a", "$b", "$c", "$d")],
                         [2, 1, 1, 0])

        def value(name: str, endpoint: str) -> float | None:
            return registry.get_sample_value(name, {"endpoint": endpoint})

        self.assertEqual(value("roost_federation_fetch_requests_total", "event"), 1)
        self.assertEqual(value("roost_federation_events_fetched_total", "get_missing_events"), 2)
        self.assertEqual(value("roost_federation_events_fetched_again_total", "backfill"), 1)
        self.assertIsNone(value("roost_federation_events_fetched_again_total", "event"))

    def test_memory_is_bounded_oldest_first(self) -> None:
        fetches = EventFetches(remember=2)
        fetches.received("event", ["$a", "$b"])
        fetches.received("event", ["$a"])  # $a is now the most recent
        fetches.received("event", ["$c"])  # forgets $b
        self.assertEqual([fetches.times_fetched(e) for e in ("$a", "$b", "$c")], [2, 0, 1])


async def _bodies(node: FedNode, user: str, room_id: str) -> list[str]:
    return [e["content"].get("body") for e in await room_events(node, user, room_id, 200)
            if e["type"] == "m.room.message"]


class GapTests(TestCase):
    timeout = 120

    async def _joined_pair(self) -> tuple[FedNode, FedNode, str]:
        # The registry exists with the metrics listener on (not started in tests).
        hs1, hs2 = await start_pair(self, listeners={"metrics": {
            "enabled": True, "bind_address": "127.0.0.1", "port": 0}})
        await hs1.register("alice")
        bob = await hs2.register("bob")
        created = await hs1.request("POST", f"{V3}/createRoom", {"preset": "public_chat"},
                                    user="alice")
        room_id = created["room_id"]
        await hs2.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(hs1.name)}", {},
                          user="bob")

        async def joined() -> bool:
            assert hs1.server is not None
            return await hs1.server.hs.engine.membership(room_id, bob) == "join"

        await eventually(joined)
        return hs1, hs2, room_id

    async def _say(self, node: FedNode, room_id: str, body: str) -> str:
        sent = await node.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/{body}",
                                  {"msgtype": "m.text", "body": body}, user="alice")
        return sent["event_id"]

    async def _lose(self, hs1: FedNode, room_id: str, count: int) -> list[str]:
        """`count` events hs1 never sends: its sender stops, they are appended, its position
        moves past them, and hs1 restarts with a sender that starts after them."""
        assert hs1.server is not None and hs1.server.hs.federation is not None
        sender = hs1.server.hs.federation.sender
        assert sender is not None
        await sender.stop()
        lost = [await self._say(hs1, room_id, f"gap{i}") for i in range(count)]
        hs = hs1.server.hs
        await FederationOutboundStore(hs.db).set_position(hs.streams["events"].current)
        await hs1.restart()
        return lost

    def _fetches(self, node: FedNode) -> Any:
        assert node.server is not None and node.server.hs.federation is not None
        return node.server.hs.federation.fetches

    async def _after_gap(self, hs1: FedNode, hs2: FedNode, room_id: str, body: str) -> None:
        await self._say(hs1, room_id, body)
        await eventually(lambda: _has(_bodies(hs2, "bob", room_id), body))

    async def test_a_short_gap_is_fetched_once_each(self) -> None:
        hs1, hs2, room_id = await self._joined_pair()
        lost = await self._lose(hs1, room_id, 5)
        fetches = self._fetches(hs2)
        self.assertEqual(fetches.fetched_total, 0)
        await self._after_gap(hs1, hs2, room_id, "after")
        # The gap arrived, in order, before the event that revealed it.
        bodies = await _bodies(hs2, "bob", room_id)
        self.assertEqual(bodies[-6:], [f"gap{i}" for i in range(5)] + ["after"])
        self.assertEqual([fetches.times_fetched(e) for e in lost], [1] * 5)
        # More traffic fetches nothing again.
        for i in range(3):
            await self._after_gap(hs1, hs2, room_id, f"more{i}")
        self.assertEqual([fetches.times_fetched(e) for e in lost], [1] * 5)
        self.assertEqual(fetches.fetched_again_total, 0)
        # The gap came in one /get_missing_events, and the figures reach the server's
        # metrics registry (what /metrics serves).
        assert hs2.server is not None
        metrics = hs2.server.hs.metrics
        self.assertEqual(metrics.get_sample_value("roost_federation_events_fetched_total",
                                                  {"endpoint": "get_missing_events"}), 5)
        self.assertEqual(metrics.get_sample_value("roost_federation_fetch_requests_total",
                                                  {"endpoint": "get_missing_events"}), 1)

    async def test_a_gap_longer_than_one_fetch_is_fetched_once_each(self) -> None:
        """More missing events than /get_missing_events brings: the rest is reached through
        the state before the oldest one fetched, and history fills in through backfill."""
        hs1, hs2, room_id = await self._joined_pair()
        lost = await self._lose(hs1, room_id, 30)
        fetches = self._fetches(hs2)
        await self._after_gap(hs1, hs2, room_id, "after")
        # Page the whole timeline back on hs2: whatever the gap left out comes by backfill.
        await eventually(lambda: _has(_bodies(hs2, "bob", room_id), "gap0"))
        bodies = await _bodies(hs2, "bob", room_id)
        self.assertEqual([b for b in bodies if b.startswith("gap")],
                         [f"gap{i}" for i in range(30)])
        once = {e: fetches.times_fetched(e) for e in lost}
        self.assertEqual({e: n for e, n in once.items() if n != 1}, {})
        self.assertEqual(fetches.fetched_again_total, 0)

    async def test_two_transactions_missing_the_same_events_fetch_them_once(self) -> None:
        """Transactions that arrive together and reveal the same gap: the second waits for
        the first's fetch instead of fetching the gap again."""
        hs1, hs2, room_id = await self._joined_pair()
        lost = await self._lose(hs1, room_id, 4)
        assert hs1.server is not None and hs1.server.hs.federation is not None
        sender = hs1.server.hs.federation.sender
        assert sender is not None
        await sender.stop()  # hs1 hands "after" over by hand, twice at once
        after_id = await self._say(hs1, room_id, "after")
        row = await hs1.server.hs.db.run("pdu", lambda t: t.query_one(
            "SELECT pdu FROM events WHERE event_id = %s", (after_id,)))
        pdu = json.loads(row[0])
        client = hs1.server.hs.federation.client
        fetches = self._fetches(hs2)

        def send(txn: str) -> Any:
            return defer.ensureDeferred(client.put_json(
                hs2.name, f"/_matrix/federation/v1/send/{txn}",
                {"origin": hs1.name, "origin_server_ts": 1, "pdus": [pdu], "edus": []}))

        answers = await defer.gatherResults([send("twice-1"), send("twice-2")])
        self.assertEqual([a["pdus"] for a in answers], [{after_id: {}}] * 2)
        self.assertEqual([fetches.times_fetched(e) for e in lost], [1] * 4)
        self.assertEqual(fetches.fetched_again_total, 0)
        self.assertEqual((await _bodies(hs2, "bob", room_id))[-5:],
                         [f"gap{i}" for i in range(4)] + ["after"])


async def _has(values: Any, wanted: str) -> bool:
    return wanted in await values
