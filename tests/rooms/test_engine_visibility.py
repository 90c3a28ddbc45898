"""RoomEngine.visibility_changes: the room's history-visibility changes, kept on its cached
head, are read again after any history_visibility event is stored (local, remote or
backfilled), and are always what storage holds."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from roost.rooms.engine import ACCEPTED, NewEvent, RoomEngine
from tests.rooms.test_engine_remote import ALICE, BOB, Remote, local_room, rows

HV = "m.room.history_visibility"


async def stored_changes(server: Any, room_id: str) -> list[tuple[int, str]]:
    """The changes as storage holds them, read without the engine."""
    found = await rows(server, "SELECT stream_ordering, pdu::json->'content'->>'history_visibility'"
                       " FROM events WHERE room_id = %s AND type = %s AND state_key = ''"
                       " AND stream_ordering IS NOT NULL AND rejected_reason IS NULL"
                       " AND NOT soft_failed ORDER BY stream_ordering", room_id, HV)
    return [(r[0], r[1]) for r in found]


async def bob_with_power(engine: RoomEngine, room_id: str, remote: Remote) -> None:
    join = await remote.make(BOB, "m.room.member", {"membership": "join"}, BOB)
    assert (await engine.ingest_remote(room_id, [join]))[join.event_id].status == ACCEPTED
    await engine.append(room_id, NewEvent(ALICE, "m.room.power_levels",
                                          {"users": {ALICE: 100, BOB: 100}}, ""))


class VisibilityChangesTests(TestCase):
    async def test_kept_on_the_head_until_a_local_change(self) -> None:
        server, engine, room_id, _ = await local_room(self)
        first = await engine.visibility_changes(room_id)
        self.assertEqual(first, await stored_changes(server, room_id))
        self.assertIs(await engine.visibility_changes(room_id), first)  # kept: no query
        await engine.append(room_id, NewEvent(ALICE, "m.room.message", {"body": "hi"}))
        self.assertIs(await engine.visibility_changes(room_id), first)  # a message keeps it
        await engine.append(room_id, NewEvent(ALICE, HV, {"history_visibility": "joined"}, ""))
        after = await engine.visibility_changes(room_id)
        self.assertEqual(after, await stored_changes(server, room_id))
        self.assertEqual(after[-1][1], "joined")
        self.assertEqual(len(after), len(first) + 1)

    async def test_a_remote_change_is_seen(self) -> None:
        server, engine, room_id, remote = await local_room(self)
        await bob_with_power(engine, room_id, remote)
        before = await engine.visibility_changes(room_id)
        change = await remote.make(BOB, HV, {"history_visibility": "invited"}, "")
        out = await engine.ingest_remote(room_id, [change])
        self.assertEqual(out[change.event_id].status, ACCEPTED, out[change.event_id].reason)
        after = await engine.visibility_changes(room_id)
        self.assertEqual(after, await stored_changes(server, room_id))
        self.assertEqual(after[-1][1], "invited")
        self.assertEqual(len(after), len(before) + 1)

    async def test_a_backfilled_change_is_seen(self) -> None:
        server, engine, room_id, remote = await local_room(self)
        await bob_with_power(engine, room_id, remote)
        state = dict((await engine._head(room_id)).state)
        prevs = list((await engine._head(room_id)).extremities)
        before = await engine.visibility_changes(room_id)
        old = await remote.make(BOB, HV, {"history_visibility": "world_readable"}, "",
                                prevs=prevs, state=state)
        out = await engine.store_backfilled(room_id, [old])
        self.assertEqual(out[old.event_id], ACCEPTED)
        after = await engine.visibility_changes(room_id)
        self.assertEqual(after, await stored_changes(server, room_id))
        self.assertEqual(len(after), len(before) + 1)
        self.assertLess(after[0][0], 0)  # history: before everything held
        self.assertEqual(after[0][1], "world_readable")

    async def test_a_head_read_again_from_storage_reads_them_again(self) -> None:
        server, engine, room_id, _ = await local_room(self)
        await engine.visibility_changes(room_id)
        await engine.append(room_id, NewEvent(ALICE, HV, {"history_visibility": "joined"}, ""))
        engine._heads.clear()  # another process's write, or the head forgotten
        self.assertEqual(await engine.visibility_changes(room_id),
                         await stored_changes(server, room_id))
