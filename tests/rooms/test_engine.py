"""The append path against real PostgreSQL: ordering, batching, state deltas, restarts."""

from __future__ import annotations

import json

from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from roost.rooms.builder import create_event_content
from roost.rooms.engine import MAX_STATE_CHAIN, IdAllocator, NewEvent, RoomEngine, RoomError
from roost.rooms.versions import KNOWN_ROOM_VERSIONS
from roost.storage.events import EventStore
from roost.storage.room_state import RoomStateStore
from tests.server_harness import RunningServer, start_server

V3 = "/_matrix/client/v3"


async def _room_with_members(server: RunningServer, count: int) -> tuple[str, list[str]]:
    tokens = [(await server.register(f"user{i}"))["access_token"] for i in range(count)]
    created = await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                   token=tokens[0])
    room_id = created.body["room_id"]
    for token in tokens[1:]:
        joined = await server.request("POST", V3 + f"/rooms/{room_id}/join", {}, token=token)
        assert joined.status == 200, joined.body
    return room_id, tokens


async def _rows(server: RunningServer, sql: str, *args: object) -> list[tuple]:
    return await server.hs.db.run("test", lambda t: t.query(sql, args))


class ConcurrentSendTests(TestCase):
    async def test_ten_clients_send_a_hundred_each_into_one_room(self) -> None:
        server = await start_server(self)
        room_id, tokens = await _room_with_members(server, 10)

        async def sender(i: int, token: str) -> list[str]:
            ids = []
            for n in range(100):
                resp = await server.request(
                    "PUT", V3 + f"/rooms/{room_id}/send/m.room.message/c{i}-{n}",
                    {"msgtype": "m.text", "body": f"{i}:{n}"}, token=token)
                assert resp.status == 200, resp.body
                ids.append(resp.body["event_id"])
            return ids

        sent = await defer.gatherResults(
            [defer.ensureDeferred(sender(i, t)) for i, t in enumerate(tokens)])
        all_ids = [e for ids in sent for e in ids]
        self.assertEqual(len(set(all_ids)), 1000)

        stored = await _rows(server, "SELECT event_id FROM events WHERE room_id = %s"
                             " AND type = 'm.room.message'", room_id)
        self.assertEqual(sorted(r[0] for r in stored), sorted(all_ids))
        extremities = await _rows(server, "SELECT event_id FROM forward_extremities"
                                  " WHERE room_id = %s", room_id)
        self.assertEqual(len(extremities), 1)

        # The room is one chain: each event's only prev event is the one before it.
        chain = await _rows(server, "SELECT event_id, pdu, depth FROM events WHERE room_id = %s"
                            " ORDER BY stream_ordering", room_id)
        for (prev_id, _, prev_depth), (_, pdu, depth) in zip(chain, chain[1:], strict=False):
            self.assertEqual(json.loads(pdu)["prev_events"], [prev_id])
            self.assertEqual(depth, prev_depth + 1)
        self.assertEqual(extremities[0][0], chain[-1][0])

        # /messages returns all 1,000 in one consistent order, forwards and backwards.
        forwards = await self._page_all(server, room_id, tokens[0], "f")
        backwards = await self._page_all(server, room_id, tokens[0], "b")
        self.assertEqual(len(forwards), 1000)
        self.assertEqual(forwards, list(reversed(backwards)))
        per_sender: dict[str, list[int]] = {}
        for body in forwards:
            i, n = body.split(":")
            per_sender.setdefault(i, []).append(int(n))
        for numbers in per_sender.values():
            self.assertEqual(numbers, list(range(100)))  # each client's order kept

    async def _page_all(self, server: RunningServer, room_id: str, token: str,
                        direction: str) -> list[str]:
        bodies: list[str] = []
        cursor = ""
        while True:
            query = f"dir={direction}&limit=300" + (f"&from={cursor}" if cursor else "")
            page = await server.request(
                "GET", V3 + f"/rooms/{room_id}/messages?{query}"
                "&filter=" + json.dumps({"types": ["m.room.message"]}), token=token)
            self.assertEqual(page.status, 200, page.body)
            bodies.extend(e["content"]["body"] for e in page.body["chunk"])
            if "end" not in page.body:
                return bodies
            cursor = page.body["end"]


class StateStorageTests(TestCase):
    async def test_state_is_stored_as_deltas_with_periodic_snapshots(self) -> None:
        server = await start_server(self)
        room_id, tokens = await _room_with_members(server, 1)
        for n in range(2 * MAX_STATE_CHAIN + 10):
            resp = await server.request("PUT", V3 + f"/rooms/{room_id}/state/m.room.topic",
                                        {"topic": f"topic {n}"}, token=tokens[0])
            self.assertEqual(resp.status, 200)
        entries = await _rows(server, "SELECT COUNT(*) FROM state_group_entries e JOIN"
                              " state_groups g ON g.id = e.state_group WHERE g.room_id = %s",
                              room_id)
        groups = await _rows(server, "SELECT COUNT(*), MAX(chain_length) FROM state_groups"
                             " WHERE room_id = %s", room_id)
        state_size = len(await server.hs.engine.current_state_events(room_id))
        # Far fewer rows than a full copy per state event would take.
        self.assertLess(entries[0][0], groups[0][0] * 2 + 3 * state_size)
        self.assertLessEqual(groups[0][1], MAX_STATE_CHAIN)
        # Every event's group resolves to the state after it.
        from roost.storage.room_state import RoomStateStore

        store = RoomStateStore(server.hs.db)
        latest = await _rows(server, "SELECT state_group FROM events WHERE room_id = %s"
                             " ORDER BY stream_ordering DESC LIMIT 1", room_id)
        self.assertEqual(await store.state_at_group(latest[0][0]),
                         await store.current_state(room_id))

    async def test_a_restarted_engine_continues_the_same_chain(self) -> None:
        data_dir = self.mktemp()
        first = await start_server(self, data_dir=data_dir)
        room_id, tokens = await _room_with_members(first, 2)
        before = await first.request("PUT", V3 + f"/rooms/{room_id}/send/m.room.message/a",
                                     {"body": "before"}, token=tokens[1])
        await first.stop()
        second = await start_server(self, dsn=first.hs.db.dsn, data_dir=data_dir)
        resp = await second.request("PUT", V3 + f"/rooms/{room_id}/send/m.room.message/b",
                                    {"body": "after"}, token=tokens[1])
        self.assertEqual(resp.status, 200, resp.body)
        again = await second.request("PUT", V3 + f"/rooms/{room_id}/send/m.room.message/a",
                                     {"body": "before"}, token=tokens[1])
        self.assertEqual(again.body["event_id"], before.body["event_id"])  # txn id remembered
        extremities = await _rows(second, "SELECT event_id FROM forward_extremities"
                                  " WHERE room_id = %s", room_id)
        self.assertEqual([r[0] for r in extremities], [resp.body["event_id"]])
        stream = await _rows(second, "SELECT stream_ordering FROM events WHERE room_id = %s"
                             " ORDER BY stream_ordering", room_id)
        positions = [r[0] for r in stream]
        self.assertEqual(len(positions), len(set(positions)))


class BatchTests(TestCase):
    async def test_refused_event_in_a_batch_does_not_stop_the_others(self) -> None:
        server = await start_server(self)
        room_id, _ = await _room_with_members(server, 2)
        engine = server.hs.engine
        outsider = "@nobody:test.roost"
        member = "@user1:test.roost"
        results = await defer.DeferredList([
            defer.ensureDeferred(engine.append(room_id, NewEvent(member, "m.room.message",
                                                                 {"body": "one"}))),
            defer.ensureDeferred(engine.append(room_id, NewEvent(outsider, "m.room.message",
                                                                 {"body": "intruder"}))),
            defer.ensureDeferred(engine.append(room_id, NewEvent(member, "m.room.message",
                                                                 {"body": "two"}))),
        ], consumeErrors=True)
        self.assertTrue(results[0][0] and results[2][0])
        self.assertFalse(results[1][0])
        self.assertIsInstance(results[1][1].value, RoomError)
        self.assertEqual(results[1][1].value.errcode, "M_FORBIDDEN")
        two = results[2][1]
        self.assertEqual(list(two.prev_event_ids), [results[0][1].event_id])
        bodies = await _rows(server, "SELECT pdu FROM events WHERE room_id = %s AND"
                             " type = 'm.room.message' ORDER BY stream_ordering", room_id)
        self.assertEqual([json.loads(b[0])["content"]["body"] for b in bodies], ["one", "two"])

    async def test_messages_share_the_heads_state_and_state_events_change_a_copy(self) -> None:
        """A big room's state was copied twice per message (O(members) each send); messages
        now share it, and anything that changes state or loaded events still copies, so
        a head, once replaced, is never changed."""
        server = await start_server(self)
        room_id, _ = await _room_with_members(server, 2)
        engine = server.hs.engine
        member = "@user1:test.roost"
        await engine.append(room_id, NewEvent(member, "m.room.message", {"body": "one"}))
        old = engine._heads[room_id]
        old_state, old_events = dict(old.state), dict(old.state_events)
        old.loaded = {"$kept": old.loaded} if old.loaded is None else old.loaded
        old_loaded = dict(old.loaded)
        message = await engine.append(room_id, NewEvent(member, "m.room.message",
                                                        {"body": "two"}))
        new = engine._heads[room_id]
        self.assertIsNot(new, old)
        self.assertIs(new.state, old.state)
        self.assertIs(new.state_events, old.state_events)
        self.assertIs(new.loaded, old.loaded)
        self.assertEqual(new.extremities, [message.event_id])
        self.assertEqual(old.depth + 1, new.depth)
        # A refused message among messages leaves the head where the others put it.
        results = await defer.DeferredList([
            defer.ensureDeferred(engine.append(room_id, NewEvent(member, "m.room.message",
                                                                 {"body": "three"}))),
            defer.ensureDeferred(engine.append(room_id, NewEvent("@nobody:test.roost",
                                                                 "m.room.message", {}))),
        ], consumeErrors=True)
        self.assertEqual([ok for ok, _ in results], [True, False])
        self.assertEqual(engine._heads[room_id].extremities, [results[0][1].event_id])
        # A redaction (of a message) copies what it may change of the loaded events.
        before_redaction = engine._heads[room_id]
        await engine.append(room_id, NewEvent(member, "m.room.redaction", {},
                                              redacts=message.event_id))
        self.assertIs(engine._heads[room_id].state, before_redaction.state)
        self.assertIsNot(engine._heads[room_id].loaded, before_redaction.loaded)
        # A state event goes to a copy: the replaced heads keep the state they had.
        topic = await engine.append(room_id, NewEvent("@user0:test.roost", "m.room.topic",
                                                      {"topic": "t"}, ""))
        head = engine._heads[room_id]
        self.assertEqual(head.state[("m.room.topic", "")], topic.event_id)
        for replaced in (old, before_redaction):
            self.assertEqual(replaced.state, old_state)
            self.assertEqual(replaced.state_events, old_events)
        self.assertEqual(old.loaded, old_loaded)

    async def test_each_room_version_builds_a_valid_room(self) -> None:
        server = await start_server(self)
        token = (await server.register("maker"))["access_token"]
        for identifier in KNOWN_ROOM_VERSIONS:
            resp = await server.request("POST", V3 + "/createRoom",
                                        {"room_version": identifier}, token=token)
            self.assertEqual(resp.status, 200, (identifier, resp.body))
            room_id = resp.body["room_id"]
            create = await server.request("GET", V3 + f"/rooms/{room_id}/state/m.room.create/",
                                          token=token)
            self.assertEqual(create.body["room_version"], identifier)
            if identifier == "12":
                self.assertNotIn(":", room_id)  # derived from the create event

    async def test_identical_v12_creates_in_one_millisecond_found_different_rooms(self) -> None:
        """v12 ids come from the create event: the same creator and content at the same
        clock reading must not collide (the second is built a millisecond later)."""
        clock = task.Clock()
        clock.advance(1_700_000_000)
        server = await start_server(self, clock=clock)
        token = (await server.register("maker"))["access_token"]
        ids = []
        for _ in range(3):
            resp = await server.request("POST", V3 + "/createRoom", {}, token=token)
            self.assertEqual(resp.status, 200, resp.body)
            ids.append(resp.body["room_id"])
        both = await defer.gatherResults([
            defer.ensureDeferred(server.request("POST", V3 + "/createRoom", {}, token=token))
            for _ in range(2)])
        self.assertEqual([r.status for r in both], [200, 200])
        ids += [r.body["room_id"] for r in both]
        self.assertEqual(len(set(ids)), 5)


class CachedHeadsTests(TestCase):
    async def test_heads_past_the_bound_are_forgotten_and_loaded_again(self) -> None:
        server = await start_server(self)
        hs = server.hs
        events = EventStore(hs.db)
        engine = RoomEngine(events, RoomStateStore(hs.db), hs.config.server_name,
                            hs.local_key.signing_key, hs.clock, hs.streams["events"],
                            IdAllocator(await events.max_state_group()), hs.notifier,
                            max_cached_heads=2)
        alice = f"@alice:{hs.config.server_name}"
        version = KNOWN_ROOM_VERSIONS["11"]
        rooms = []
        for _ in range(3):
            room_id, built = await engine.create_room(version, [
                NewEvent(alice, "m.room.create", create_event_content(version, alice), ""),
                NewEvent(alice, "m.room.member", {"membership": "join"}, alice),
            ])
            rooms.append((room_id, built[-1].event_id))
        self.assertEqual(await engine.membership(rooms[1][0], alice), "join")
        # The first room's head was the least recently used: it is no longer held...
        self.assertEqual(len(engine._heads), 2)
        self.assertNotIn(rooms[0][0], engine._heads)
        # ...and comes back from storage as it was: a send builds on its last event.
        sent = await engine.append(rooms[0][0], NewEvent(alice, "m.room.message", {"body": "x"}))
        self.assertEqual(list(sent.prev_event_ids), [rooms[0][1]])
        self.assertEqual(len(engine._heads), 2)


class _GatedState(RoomStateStore):
    """Room heads read from storage only when the test opens the gate."""

    gate: defer.Deferred[None] | None = None

    async def room_head(self, room_id: str):  # type: ignore[no-untyped-def]
        stored = await super().room_head(room_id)
        if self.gate is not None:
            await self.gate
        return stored


class ForgottenHeadsTests(TestCase):
    async def test_a_head_loaded_across_another_process_write_is_not_kept(self) -> None:
        server = await start_server(self)
        hs = server.hs
        room_id, _ = await _room_with_members(server, 1)
        events = EventStore(hs.db)
        state = _GatedState(hs.db)
        reader = RoomEngine(events, state, hs.config.server_name, hs.local_key.signing_key,
                            hs.clock, hs.streams["events"],
                            IdAllocator(await events.max_state_group()), hs.notifier)
        state.gate = defer.Deferred()
        loading = defer.ensureDeferred(reader.current_state_ids(room_id))
        reader.forget_heads([room_id])  # another process's write, announced meanwhile
        state.gate.callback(None)
        self.assertIn(("m.room.create", ""), await loading)
        self.assertNotIn(room_id, reader._heads)  # read again next time, not stale
        state.gate = None
        await reader.current_state_ids(room_id)
        self.assertIn(room_id, reader._heads)
