"""Large reads of a room's current state come from the engine's cached head, unchanged."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import TestCase

from roost.rooms.engine_types import EventCache, RecentLocalEvents, event_from_storage
from roost.rooms.event_reader import HELD_LOOKUP_MIN
from tests.server_harness import start_server

V3 = "/_matrix/client/v3"


class HeldStateReadTests(TestCase):
    async def test_state_read_from_the_head_equals_the_stored_events(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {}, token=token)).body["room_id"]
        for i in range(HELD_LOOKUP_MIN):
            resp = await server.request("PUT", V3 + f"/rooms/{room}/state/org.example.s/k{i}",
                                        {"i": i}, token=token)
            assert resp.status == 200, resp.body
        redacted = resp.body["event_id"]
        await server.request("PUT", V3 + f"/rooms/{room}/redact/{redacted}/r1", {}, token=token)
        engine: Any = server.hs.engine
        state = await engine.current_state_events(room)
        ids = sorted(e.event_id for e in state.values()) + ["$not-an-event"]
        self.assertTrue(engine._reader._held_state(ids)[1])  # the head answers
        held = await engine.get_events(ids)
        stored = {eid: engine._reader.load(s) for eid, s in
                  (await engine._events.get_events(ids)).items()}
        self.assertEqual(set(held), set(stored))
        self.assertNotIn("$not-an-event", held)
        for eid, loaded in stored.items():
            got = held[eid]
            self.assertEqual((got.event.event_id, got.event.pdu, got.stream_ordering,
                              got.redacted_by, got.rejected),
                             (loaded.event.event_id, loaded.event.pdu, loaded.stream_ordering,
                              loaded.redacted_by, loaded.rejected))
        self.assertIsNotNone(held[redacted].redacted_by)


class ParsedEventCacheTests(TestCase):
    """Events are parsed once and shared by readers (roost/rooms/engine_types.py EventCache), and what
    they serve is exactly what storage holds."""

    async def _room_with_messages(self, count: int) -> tuple[Any, list[str]]:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {}, token=token)).body["room_id"]
        ids = []
        for i in range(count):
            resp = await server.request("PUT", V3 + f"/rooms/{room}/send/m.room.message/t{i}",
                                        {"msgtype": "m.text", "body": f"m{i}"}, token=token)
            ids.append(resp.body["event_id"])
        return server.hs.engine, ids

    async def test_an_event_read_twice_is_the_same_event_as_storage_holds(self) -> None:
        engine, ids = await self._room_with_messages(3)
        first = await engine.get_events(ids)
        second = await engine.get_events(ids)
        stored = await engine._events.get_events(ids)
        for eid in ids:
            self.assertIs(first[eid].event, second[eid].event)
            fresh = event_from_storage(stored[eid])
            self.assertEqual((first[eid].event.pdu, first[eid].event.canonical_bytes,
                              first[eid].event.room_id, first[eid].event.version),
                             (fresh.pdu, fresh.canonical_bytes, fresh.room_id, fresh.version))

    async def test_a_row_with_other_json_is_parsed_again_and_the_cache_is_bounded(self) -> None:
        engine, ids = await self._room_with_messages(3)
        stored = await engine._events.get_events(ids)
        cache = EventCache(size=2)
        row = stored[ids[0]]
        kept = cache.event(row)
        self.assertIs(cache.event(row), kept)
        other = row._replace(pdu_json=stored[ids[1]].pdu_json)
        self.assertEqual(cache.event(other).pdu, json.loads(stored[ids[1]].pdu_json))
        for eid in ids:
            cache.event(stored[eid])
        self.assertEqual(len(cache), 2)
        self.assertIsNot(cache.event(stored[ids[0]]), kept)  # forgotten, parsed again
        self.assertEqual(len(EventCache(size=0)), 0)

    async def test_a_page_of_rows_is_served_as_each_row_alone(self) -> None:
        """EventCache.loaded (a history page's rows in one loop) keeps `event`'s checks: a
        cached entry serves a row only if the row's JSON, room and version are its own."""
        engine, ids = await self._room_with_messages(3)
        stored = await engine._events.get_events(ids)
        cache = EventCache(size=10)
        kept = cache.event(stored[ids[0]])
        other = stored[ids[0]]._replace(pdu_json=stored[ids[1]].pdu_json)
        moved = stored[ids[2]]._replace(room_id="!elsewhere:test")
        page = cache.loaded([stored[ids[0]], other, moved, stored[ids[1]]])
        self.assertIs(page[0].event, kept)
        self.assertEqual(page[1].event.pdu, json.loads(stored[ids[1]].pdu_json))
        self.assertIsNot(page[1].event, kept)
        self.assertEqual(page[2].event.room_id, "!elsewhere:test")  # parsed from the row
        self.assertEqual([(p.stream_ordering, p.redacted_by, p.rejected) for p in page],
                         [(r.stream_ordering, r.redacted_by, r.rejected_reason is not None)
                          for r in (stored[ids[0]], other, moved, stored[ids[1]])])
        self.assertEqual(page[3].event.canonical_bytes, stored[ids[1]].pdu_json.encode())


    async def test_local_sends_are_served_from_the_recent_sends_not_copied(self) -> None:
        """The engine's newest local sends are read from RecentLocalEvents, by position, as
        the same Event objects: the parsed cache holds no copy of them (it held every send
        before); once they left the recent sends, a read parses the row and caches it."""
        engine, ids = await self._room_with_messages(3)

        def cached() -> list[str]:
            """Which of the sends the parsed cache holds (by id: background readers, push
            evaluation behind the stream under load, may cache the room's other events)."""
            return [eid for eid in ids if eid in engine._reader._parsed._entries]

        self.assertEqual(cached(), [])
        stored = await engine._events.get_events(ids)
        positions = [stored[eid].stream_ordering for eid in ids]
        recent = engine.recent_local_events(positions[0] - 1, positions[-1])
        assert recent is not None
        read = await engine.get_events(ids)
        for eid, (_, held, _) in zip(ids, recent, strict=True):
            self.assertIs(read[eid].event, held)
            self.assertEqual(read[eid].event.canonical_bytes, stored[eid].pdu_json.encode())
        self.assertEqual(cached(), [])
        engine._recent._events.clear()  # as if 256 newer sends had pushed them out
        again = await engine.get_events(ids)
        for eid in ids:
            self.assertIsNot(again[eid].event, read[eid].event)
            self.assertEqual(again[eid].event.pdu, read[eid].event.pdu)
        self.assertEqual(cached(), ids)

    async def test_a_recent_send_serves_only_its_own_row(self) -> None:
        """A row at a recent send's position is served the held event only when it is that
        event as stored: another id, room or JSON at the position, or an event carrying
        `unsigned` (storage holds none), is parsed from the row."""
        engine, ids = await self._room_with_messages(2)
        stored = await engine._events.get_events(ids)
        first, second = stored[ids[0]], stored[ids[1]]
        recent = RecentLocalEvents()
        held = engine._recent._events[first.stream_ordering][1]
        recent.add([first.stream_ordering], [held], [first.state_group])
        cache = EventCache(size=10, recent=recent)
        self.assertIs(cache.event(first), held)
        self.assertIs(cache.loaded([first])[0].event, held)
        for row in (second._replace(stream_ordering=first.stream_ordering),
                    first._replace(room_id="!elsewhere:test"),
                    first._replace(pdu_json=second.pdu_json)):
            self.assertIsNot(cache.event(row), held)
            self.assertIsNot(cache.loaded([row])[0].event, held)
        with_unsigned = RecentLocalEvents()
        marked = event_from_storage(first)
        marked.unsigned["transaction_id"] = "t"
        with_unsigned.add([first.stream_ordering], [marked], [first.state_group])
        served = EventCache(size=10, recent=with_unsigned).event(first)
        self.assertIsNot(served, marked)
        self.assertEqual(served.unsigned, {})


class CurrentStateIdsTests(TestCase):
    async def test_the_heads_state_ids_are_the_stored_current_state(self) -> None:
        """/members and /state take the state ids from the engine's head; they must be
        the current_state table's rows, after joins, a leave and a state change."""
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        bob = (await server.register("bob"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                     token=alice)).body["room_id"]
        await server.request("POST", V3 + f"/rooms/{room}/join", {}, token=bob)
        await server.request("PUT", V3 + f"/rooms/{room}/state/m.room.topic",
                             {"topic": "t"}, token=alice)
        await server.request("POST", V3 + f"/rooms/{room}/leave", {}, token=bob)
        engine: Any = server.hs.engine
        self.assertEqual(await engine.current_state_ids(room),
                         await engine._state.current_state(room))
        engine._heads.clear()  # and as loaded from storage again
        self.assertEqual(await engine.current_state_ids(room),
                         await engine._state.current_state(room))


async def _same_as_stored(case: TestCase, engine: Any, ids: list[str]) -> dict[str, Any]:
    """A big read of state events (from the head) equals what storage holds."""
    held = await engine.get_events(ids)
    stored = {eid: engine._reader.load(s) for eid, s in
              (await engine._events.get_events(ids)).items()}
    case.assertEqual({eid: (le.stream_ordering, le.redacted_by, le.rejected)
                      for eid, le in held.items()},
                     {eid: (le.stream_ordering, le.redacted_by, le.rejected)
                      for eid, le in stored.items()})
    return held


class KeptLoadedStateTests(TestCase):
    """Positions and redactions of state events are kept on the head after a big read
    (RoomHead.loaded) and read again after a persist that may change them."""

    async def _room_with_state(self) -> tuple[Any, str, str, list[str]]:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {}, token=token)).body["room_id"]
        for i in range(HELD_LOOKUP_MIN):
            await server.request("PUT", V3 + f"/rooms/{room}/state/org.example.s/k{i}",
                                 {"i": i}, token=token)
        engine: Any = server.hs.engine
        ids = sorted((await engine.current_state_ids(room)).values())
        return server, token, room, ids

    async def test_a_local_redaction_of_a_state_event_is_seen(self) -> None:
        server, token, room, ids = await self._room_with_state()
        engine: Any = server.hs.engine
        first = await _same_as_stored(self, engine, ids)
        self.assertIs((await engine.get_events(ids))[ids[0]], first[ids[0]])  # kept
        target = (await engine.current_state_events(room))[("org.example.s", "k3")].event_id
        resp = await server.request("PUT", V3 + f"/rooms/{room}/redact/{target}/r1", {},
                                    token=token)
        held = await _same_as_stored(self, engine, ids)
        self.assertEqual(held[target].redacted_by, resp.body["event_id"])

    async def test_a_redaction_from_another_room_applies_nowhere(self) -> None:
        server, token, room, ids = await self._room_with_state()
        engine: Any = server.hs.engine
        target = (await engine.current_state_events(room))[("org.example.s", "k4")].event_id
        other = (await server.request("POST", V3 + "/createRoom", {}, token=token)).body["room_id"]
        await server.request("PUT", V3 + f"/rooms/{other}/redact/{target}/r1", {}, token=token)
        held = await _same_as_stored(self, engine, ids)
        self.assertIsNone(held[target].redacted_by)

    async def test_a_remote_redaction_of_a_state_event_is_seen(self) -> None:
        from roost.rooms.engine import NewEvent
        from tests.rooms.test_engine_remote import ALICE, BOB, local_room

        _, engine, room, remote = await local_room(self)
        join = await remote.make(BOB, "m.room.member", {"membership": "join"}, BOB)
        await engine.ingest_remote(room, [join])
        await engine.append(room, NewEvent(ALICE, "m.room.power_levels",
                                           {"users": {ALICE: 100, BOB: 100}}, ""))
        for i in range(HELD_LOOKUP_MIN):
            await engine.append(room, NewEvent(ALICE, "org.example.s", {"i": i}, f"k{i}"))
        ids = sorted((await engine.current_state_ids(room)).values())
        await _same_as_stored(self, engine, ids)
        target = (await engine.current_state_events(room))[("org.example.s", "k5")].event_id
        redaction = await remote.make(BOB, "m.room.redaction", {"redacts": target})
        await engine.ingest_remote(room, [redaction])
        held = await _same_as_stored(self, engine, ids)
        self.assertEqual(held[target].redacted_by, redaction.event_id)


class RecentLocalEventsTests(TestCase):
    """The engine's newest local sends by position (engine_types.RecentLocalEvents): a range
    is answered only when every position in it is there, with the events storage holds."""

    async def test_local_sends_are_served_by_position_as_stored(self) -> None:
        engine, ids = await ParsedEventCacheTests._room_with_messages(self, 3)  # type: ignore[arg-type]
        stored = await engine._events.get_events(ids)
        positions = [stored[eid].stream_ordering for eid in ids]
        found = engine.recent_local_events(positions[0] - 1, positions[-1])
        assert found is not None
        self.assertEqual([p for p, _, _ in found], positions)
        self.assertEqual([e.event_id for _, e, _ in found], ids)
        self.assertEqual([e.content for _, e, _ in found],
                         [json.loads(stored[eid].pdu_json)["content"] for eid in ids])
        self.assertEqual([g for _, _, g in found], [stored[eid].state_group for eid in ids])

    def test_a_missing_or_forgotten_position_sends_the_reader_to_storage(self) -> None:
        recent = RecentLocalEvents(size=3)
        events: list[Any] = [object(), object(), object(), object()]
        recent.add([1, 2], events[:2], [7, 7])
        recent.add([4], events[2:3], [8])  # position 3: a remote event, say
        self.assertEqual(recent.between(0, 2), [(1, events[0], 7), (2, events[1], 7)])
        self.assertIsNone(recent.between(0, 4))
        self.assertIsNone(recent.between(2, 4))
        self.assertEqual(recent.between(3, 4), [(4, events[2], 8)])
        recent.add([5], events[3:], [None])
        self.assertIsNone(recent.between(0, 1))  # the oldest was forgotten
        self.assertEqual(recent.between(3, 5), [(4, events[2], 8), (5, events[3], None)])
        self.assertIsNone(recent.between(0, 100))


class HeadMembersTests(TestCase):
    """What a sync reads of a big room's state once per head (its state in key order, its
    members counted) follows every persist: a head's copy starts without them."""

    async def test_sorted_state_and_member_counts_follow_joins_and_leaves(self) -> None:
        server = await start_server(self)
        tokens = {u: (await server.register(u))["access_token"] for u in ("alice", "bob", "carol")}
        room = (await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                     token=tokens["alice"])).body["room_id"]
        engine: Any = server.hs.engine

        async def check(joined: int, heroes: list[str]) -> None:
            state = await engine.current_state_events(room)
            self.assertEqual(await engine.current_state_sorted(room), sorted(state.items()))
            self.assertEqual((await engine.members_overview(room)).joined, joined)
            body = (await server.request("GET", V3 + "/sync", token=tokens["alice"])).body
            summary = body["rooms"]["join"][room]["summary"]
            self.assertEqual((summary["m.joined_member_count"], summary["m.heroes"]),
                             (joined, heroes))
            current = {e.event_id for e in state.values()}
            in_state = {e["event_id"] for e in body["rooms"]["join"][room]["state"]["events"]}
            in_timeline = {e["event_id"] for e in body["rooms"]["join"][room]["timeline"]["events"]}
            self.assertLessEqual(in_state, current)
            self.assertEqual(current - in_timeline, in_state)

        await check(1, [])
        for user in ("carol", "bob"):
            resp = await server.request("POST", V3 + f"/rooms/{room}/join", {},
                                        token=tokens[user])
            self.assertEqual(resp.status, 200, resp.body)
        await check(3, ["@bob:test.roost", "@carol:test.roost"])
        await server.request("POST", V3 + f"/rooms/{room}/leave", {}, token=tokens["bob"])
        await check(2, ["@carol:test.roost"])
