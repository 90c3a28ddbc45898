"""The sync window takes local sends from the engine's memory (client_api/sync_local.py):
the same range storage returns, and storage is read only when memory cannot answer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.trial.unittest import TestCase

from roost.client_api.sync_local import local_ranges
from roost.rooms.engine import RoomEngine
from roost.rooms.engine_types import canonical_of
from roost.storage.sync_queries import RecentEvents
from tests.server_harness import RunningServer, q, start_server

V3 = "/_matrix/client/v3"


class LocalRangeTests(TestCase):
    _engine: RoomEngine | None = None

    async def _room(self) -> tuple[RunningServer, str, str]:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                     token=token)).body["room_id"]
        return server, token, room

    async def _send(self, server: RunningServer, token: str, room: str, txn: str,
                    content: dict[str, Any], kind: str = "m.room.message") -> str:
        resp = await server.request("PUT", V3 + f"/rooms/{room}/send/{kind}/{txn}", content,
                                    token=token)
        assert resp.status == 200, resp.body
        return str(resp.body["event_id"])

    def _position(self, server: RunningServer) -> int:
        builder = server.hs.sync_builder
        assert builder is not None
        return builder.now().events

    def _windows(self, server: RunningServer, start: int) -> tuple[RecentEvents, RecentEvents]:
        """Two sync windows from `start`: one taking local sends from memory, one reading
        every range from storage."""
        builder = server.hs.sync_builder
        assert builder is not None
        self._engine = server.hs.engine
        windows = (RecentEvents(builder._queries, builder._events,
                                local=local_ranges(server.hs.engine.recent_local_events)),
                   RecentEvents(builder._queries, builder._events))
        for window in windows:
            window._start = window._end = start
        return windows

    async def _same(self, memory: RecentEvents, stored: RecentEvents, cuts: list[int]) -> None:
        """Both windows taken to each position of `cuts` in turn hold the same events,
        redactions and relation kinds; only `stored` read PostgreSQL."""
        for cut in cuts:
            await memory.catch_up(cut)
            await stored.catch_up(cut)
        assert memory._start is not None
        end = cuts[-1]
        events = await memory.window(memory._start, end)
        stored_events = await stored.window(memory._start, end)
        assert events is not None and stored_events is not None
        # The same rows; the canonical JSON is the event's own bytes in memory's (no
        # decoded copy per row), a str as PostgreSQL returns it in storage's.
        self.assertEqual([e._replace(pdu_json=canonical_of(e)) for e in events],
                         [e._replace(pdu_json=e.pdu_json.encode()) for e in stored_events])
        self.assertEqual({type(e.pdu_json) for e in stored_events}, {str})
        assert self._engine is not None
        sent = {event.event_id: event.canonical_bytes
                for _, event, _ in self._engine.recent_local_events(memory._start, end) or ()}
        self.assertEqual(len(sent), len(events))
        for event in events:
            self.assertIs(event.pdu_json, sent[event.event_id])
        ids = [e.event_id for e in events]
        self.assertEqual(memory.relation_kinds(ids), stored.relation_kinds(ids))
        self.assertEqual((memory.stored_loads, stored.stored_loads), (0, len(cuts)))

    async def test_local_sends_are_the_stored_range(self) -> None:
        """Messages, a state event, relations of two kinds and a redaction: the window
        fed from memory holds what the three SELECTs give it, however the range is cut
        (the redaction in the same range as its target, or in a later one)."""
        server, token, room = await self._room()
        after = self._position(server)
        first = await self._send(server, token, room, "t1", {"msgtype": "m.text", "body": "a"})
        await self._send(server, token, room, "t2", {"m.relates_to": {
            "rel_type": "m.annotation", "event_id": first, "key": "👍"}}, "m.reaction")
        await self._send(server, token, room, "t3", {
            "msgtype": "m.text", "body": "in thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": first}})
        resp = await server.request("PUT", V3 + f"/rooms/{room}/state/m.room.topic/",
                                    {"topic": "news"}, token=token)
        assert resp.status == 200, resp.body
        doomed = await self._send(server, token, room, "t4", {"msgtype": "m.text", "body": "x"})
        resp = await server.request("PUT", V3 + f"/rooms/{room}/redact/{q(doomed)}/t5", {},
                                    token=token)
        assert resp.status == 200, resp.body
        upto = self._position(server)
        self.assertEqual(upto - after, 6)
        await self._same(*self._windows(server, after), [upto])
        for cut in range(after + 1, upto):
            await self._same(*self._windows(server, after), [cut, upto])
        memory, _ = self._windows(server, after)
        await memory.catch_up(upto)
        kinds = memory.relation_kinds([first])
        self.assertEqual(kinds, {first: frozenset({"m.annotation", "m.thread"})})
        redacted = await memory.window(upto - 2, upto - 1)
        self.assertEqual([e.redacted_by for e in redacted or []], [resp.body["event_id"]])

    async def test_a_position_memory_does_not_hold_is_read_from_storage(self) -> None:
        server, token, room = await self._room()
        engine = server.hs.engine
        after = self._position(server)
        await self._send(server, token, room, "t1", {"msgtype": "m.text", "body": "a"})
        upto = self._position(server)
        forgotten = engine._recent._events.pop(upto)  # as if persisted by another path
        self.assertIsNone(local_ranges(engine.recent_local_events)(after, upto))
        builder = server.hs.sync_builder
        assert builder is not None
        stored_loads = builder._recent.stored_loads
        body = await self._sync_from(server, token, after, upto)
        self.assertEqual(builder._recent.stored_loads, stored_loads + 1)
        self.assertIn(forgotten[1].event_id, body)

    async def _sync_from(self, server: RunningServer, token: str, after: int,
                         upto: int) -> list[str]:
        """Event ids of an incremental sync from events position `after` (the window
        starts there) up to `upto`."""
        builder = server.hs.sync_builder
        assert builder is not None
        since = replace(builder.now(), events=after)
        resp = await server.request("GET", V3 + f"/sync?since={q(str(since))}&timeout=0",
                                    token=token)
        assert resp.status == 200, resp.body
        self.assertEqual(builder.now().events, upto)
        return [e["event_id"] for r in resp.body["rooms"]["join"].values()
                for e in r["timeline"]["events"]]

    async def test_local_sends_take_no_read_of_the_stream(self) -> None:
        """A long poll woken by local sends gets them from memory: the window reads
        PostgreSQL only to start, never for the sends (fails without `local`)."""
        server, token, room = await self._room()
        builder = server.hs.sync_builder
        assert builder is not None
        first = await server.request("GET", V3 + "/sync", token=token)
        since = first.body["next_batch"]
        await server.request("GET", V3 + f"/sync?since={q(since)}&timeout=0", token=token)
        stored_loads = builder._recent.stored_loads
        sent = [await self._send(server, token, room, f"m{i}", {"msgtype": "m.text",
                                                                "body": str(i)})
                for i in range(3)]
        resp = await server.request("GET", V3 + f"/sync?since={q(since)}&timeout=0", token=token)
        got = [e["event_id"] for e in resp.body["rooms"]["join"][room]["timeline"]["events"]]
        self.assertEqual(got[-3:], sent)
        self.assertEqual(builder._recent.stored_loads, stored_loads)

    async def test_a_local_redaction_names_an_event_of_its_own_room(self) -> None:
        """What the memory path relies on (the stored read drops a redaction of another
        room's event; memory does not look): a local send cannot make one."""
        server, token, room = await self._room()
        other = (await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                      token=token)).body["room_id"]
        target = await self._send(server, token, room, "t1", {"msgtype": "m.text", "body": "a"})
        resp = await server.request("PUT", V3 + f"/rooms/{other}/redact/{q(target)}/t2", {},
                                    token=token)
        self.assertEqual((resp.status, resp.body["errcode"]), (404, "M_NOT_FOUND"))
