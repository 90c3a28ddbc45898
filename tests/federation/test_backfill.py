"""Backfill: a user joins a room with history on another server (Roost or Synapse) and
pages /messages back to the room's creation, the history fetched with /backfill."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.federation.synapse_harness import start_synapse
from tests.federation.two_servers import V3, FedNode, start_node, start_pair

HISTORY = 30


async def _page_back(node: FedNode, user: str, room_id: str, limit: int = 7
                     ) -> tuple[list[dict[str, Any]], list[str]]:
    """Every event /messages gives going backwards from now (newest first), and the
    tokens it handed out."""
    found: list[dict[str, Any]] = []
    tokens: list[str] = []
    token: str | None = None
    for _ in range(100):
        path = f"{V3}/rooms/{quote(room_id)}/messages?dir=b&limit={limit}"
        if token is not None:
            path += f"&from={quote(token)}"
        page = await node.request("GET", path, user=user)
        found.extend(page["chunk"])
        token = page.get("end")
        if token is None:
            return found, tokens
        tokens.append(token)
    raise AssertionError("pagination did not end")


def _bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


class BackfillTests(TestCase):
    timeout = 300

    def _check_history(self, events: list[dict[str, Any]], joiner: str) -> None:
        ids = [e["event_id"] for e in events]
        self.assertEqual(len(ids), len(set(ids)), "an event came twice")
        oldest_first = list(reversed(events))
        self.assertEqual(oldest_first[0]["type"], "m.room.create")
        self.assertEqual(_bodies(oldest_first), [f"m{i}" for i in range(HISTORY)] + ["after"])
        joins = [i for i, e in enumerate(oldest_first) if e["type"] == "m.room.member"
                 and e["state_key"] == joiner and e["content"]["membership"] == "join"]
        last_history = max(i for i, e in enumerate(oldest_first)
                           if e["content"].get("body") == f"m{HISTORY - 1}")
        self.assertEqual(len(joins), 1)
        self.assertGreater(joins[0], last_history)

    async def _assert_history_has_state(self, node: FedNode, room_id: str) -> None:
        assert node.server is not None
        unstated = await node.server.hs.db.run("unstated", lambda t: t.query_one(
            "SELECT COUNT(*) FROM events WHERE room_id = %s AND stream_ordering < 0"
            " AND state_group IS NULL", (room_id,)))
        self.assertEqual(unstated[0], 0)

    async def test_roost_user_pages_back_through_a_remote_roost_rooms_history(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        bob = await hs2.register("bob")
        created = await hs1.request("POST", f"{V3}/createRoom",
                                    {"preset": "public_chat", "name": "History"}, user="alice")
        room_id = created["room_id"]
        for i in range(HISTORY):
            await hs1.request("PUT", f"{V3}/rooms/{quote(room_id)}/send/m.room.message/t{i}",
                              {"msgtype": "m.text", "body": f"m{i}"}, user="alice")
        await hs2.request("POST", f"{V3}/join/{quote(room_id)}?server_name={quote(hs1.name)}",
                          {}, user="bob")
        await hs2.request("PUT", f"{V3}/rooms/{quote(room_id)}/send/m.room.message/after",
                          {"msgtype": "m.text", "body": "after"}, user="bob")

        events, tokens = await _page_back(hs2, "bob", room_id)
        self._check_history(events, bob)
        # History sorts before the join: its tokens are below zero.
        self.assertTrue(any(t.startswith("s-") for t in tokens), tokens)
        # Each backfilled event was checked against the state before it and keeps it (the
        # pages stopped short of the creation: the state before the oldest of each came
        # through /state_ids).
        await self._assert_history_has_state(hs2, room_id)

        # Stored and served: the event endpoint, and a second pagination (no refetch, no
        # duplicates; forwards from the start too).
        first = next(e for e in reversed(events) if e["type"] == "m.room.message")
        served = await hs2.request(
            "GET", f"{V3}/rooms/{quote(room_id)}/event/{quote(first['event_id'])}", user="bob")
        self.assertEqual(served["content"]["body"], "m0")
        again, _ = await _page_back(hs2, "bob", room_id, limit=50)
        self.assertEqual([e["event_id"] for e in again], [e["event_id"] for e in events])
        forwards = await hs2.request(
            "GET", f"{V3}/rooms/{quote(room_id)}/messages?dir=f&limit=100", user="bob")
        self.assertEqual([e["event_id"] for e in forwards["chunk"]],
                         [e["event_id"] for e in reversed(events)])

        # History does not reach /sync as new events.
        sync = await hs2.request("GET", f"{V3}/sync?timeout=0", user="bob")
        timeline = sync["rooms"]["join"][room_id]["timeline"]["events"]
        self.assertNotIn("m0", _bodies(timeline))

    async def test_roost_user_pages_back_through_a_synapse_rooms_history(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        bob = await roost.register("bob")
        _, token = await threads.deferToThread(synapse.register, "alice")

        def call(method: str, path: str, body: Any = None) -> Any:
            status, answer = synapse.client(method, path, body, token)
            assert status == 200, (path, status, answer)
            return answer

        created = await threads.deferToThread(call, "POST", f"{V3}/createRoom",
                                              {"preset": "public_chat", "name": "History"})
        room_id = created["room_id"]
        for i in range(HISTORY):
            await threads.deferToThread(
                call, "PUT", f"{V3}/rooms/{quote(room_id)}/send/m.room.message/t{i}",
                {"msgtype": "m.text", "body": f"m{i}"})
        await roost.request("POST", f"{V3}/join/{quote(room_id)}?server_name={synapse.name}",
                            {}, user="bob")
        await roost.request("PUT", f"{V3}/rooms/{quote(room_id)}/send/m.room.message/after",
                            {"msgtype": "m.text", "body": "after"}, user="bob")
        events, _ = await _page_back(roost, "bob", room_id)
        self._check_history(events, bob)
        await self._assert_history_has_state(roost, room_id)


class TamperingClient:
    """The real federation client, with /backfill answers altered on the way in."""

    def __init__(self, real: Any, tamper: Any) -> None:
        self._real = real
        self._tamper = tamper

    async def get_json(self, destination: str, path: str, args: Any = None, **o: Any) -> Any:
        answer = await self._real.get_json(destination, path, args, **o)
        if "/backfill/" in path:
            self._tamper(answer["pdus"])
        return answer


class BackfillCheckTests(TestCase):
    timeout = 120

    async def test_backfilled_events_are_checked_like_any_inbound_event(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        await hs2.register("bob")
        created = await hs1.request("POST", f"{V3}/createRoom",
                                    {"preset": "public_chat"}, user="alice")
        room_id = created["room_id"]
        sent = []
        for i in range(5):
            answer = await hs1.request(
                "PUT", f"{V3}/rooms/{quote(room_id)}/send/m.room.message/t{i}",
                {"msgtype": "m.text", "body": f"m{i}"}, user="alice")
            sent.append(answer["event_id"])
        await hs2.request("POST", f"{V3}/join/{quote(room_id)}?server_name={quote(hs1.name)}",
                          {}, user="bob")
        forged_sig, forged_content = sent[1], sent[3]

        def tamper(pdus: list[dict[str, Any]]) -> None:
            for pdu in pdus:
                body = pdu.get("content", {}).get("body")
                if body == "m1":
                    sigs = pdu["signatures"][hs1.name]
                    pdu["signatures"][hs1.name] = {k: "A" * 86 for k in sigs}
                elif body == "m3":
                    pdu["content"] = {"msgtype": "m.text", "body": "forged"}

        from roost.federation.backfill import Backfiller
        from roost.storage.events import EventStore

        server = hs2.server
        assert server is not None and server.hs.federation is not None
        backfiller = Backfiller(server.hs.engine, EventStore(server.hs.db),
                                server.hs.federation.keyring,
                                TamperingClient(server.hs.federation.client, tamper),
                                server.hs.config.server_name)
        self.assertTrue(await backfiller.backfill(room_id, 50))
        held = await server.hs.engine.get_events(sent)
        # A bad signature: dropped. Content that no longer matches its hash: kept redacted.
        self.assertNotIn(forged_sig, held)
        self.assertEqual(held[forged_content].event.content, {})
        self.assertEqual({held[e].event.content.get("body") for e in (sent[0], sent[2], sent[4])},
                         {"m0", "m2", "m4"})
        self.assertTrue(all((held[e].stream_ordering or 0) < 0 for e in held))


class BackfilledSearchTests(TestCase):
    timeout = 240

    async def test_backfilled_history_is_searchable(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        await hs2.register("bob")
        created = await hs1.request("POST", f"{V3}/createRoom",
                                    {"preset": "public_chat"}, user="alice")
        room_id = created["room_id"]
        for i in range(5):
            await hs1.request("PUT", f"{V3}/rooms/{quote(room_id)}/send/m.room.message/t{i}",
                              {"msgtype": "m.text", "body": f"ancient scroll {i}"},
                              user="alice")
        await hs2.request("POST", f"{V3}/join/{quote(room_id)}?server_name={quote(hs1.name)}",
                          {}, user="bob")
        query = {"search_categories": {"room_events": {"search_term": "scroll"}}}
        before = await hs2.request("POST", f"{V3}/search", query, user="bob")
        self.assertEqual(before["search_categories"]["room_events"]["results"], [])
        await _page_back(hs2, "bob", room_id)  # the history arrives by backfill
        found = await hs2.request("POST", f"{V3}/search", query, user="bob")
        bodies = sorted(r["result"]["content"]["body"]
                        for r in found["search_categories"]["room_events"]["results"])
        self.assertEqual(bodies, [f"ancient scroll {i}" for i in range(5)])


class RemoteTimestampTests(TestCase):
    timeout = 240

    async def test_history_from_before_the_join_is_found_on_the_other_server(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        await hs2.register("bob")
        created = await hs1.request("POST", f"{V3}/createRoom",
                                    {"preset": "public_chat"}, user="alice")
        room_id = created["room_id"]
        sent = []
        for i in range(3):
            answer = await hs1.request(
                "PUT", f"{V3}/rooms/{quote(room_id)}/send/m.room.message/t{i}",
                {"msgtype": "m.text", "body": f"m{i}"}, user="alice")
            sent.append(answer["event_id"])
        second = await hs1.request("GET", f"{V3}/rooms/{quote(room_id)}/event/{quote(sent[1])}",
                                   user="alice")
        await hs2.request("POST", f"{V3}/join/{quote(room_id)}?server_name={quote(hs1.name)}",
                          {}, user="bob")
        path = (f"/_matrix/client/v1/rooms/{quote(room_id)}/timestamp_to_event"
                f"?ts={second['origin_server_ts']}&dir=b")
        found = await hs2.request("GET", path, user="bob")
        self.assertEqual(found["origin_server_ts"], second["origin_server_ts"])
        self.assertIn(found["event_id"], sent[1:])  # the second, or the third in the same ms
