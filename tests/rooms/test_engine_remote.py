"""Remote events through the engine against real PostgreSQL: ingest_remote (accepted,
rejected, soft-failed, missing prevs, a fork merged by state resolution), create_remote_room
and build_for_remote."""

from __future__ import annotations

from typing import Any

from signedjson.key import generate_signing_key
from twisted.trial.unittest import TestCase

from roost.rooms.builder import (
    build_event_pdu,
    create_event_content,
    finalize_pdu,
    select_auth_event_ids,
)
from roost.rooms.engine import (
    ACCEPTED,
    KNOWN,
    MISSING,
    OUTLIER,
    REJECTED,
    SOFT_FAILED,
    NewEvent,
    RoomEngine,
    RoomError,
)
from roost.rooms.events import Event
from roost.rooms.hashing import server_name_of
from roost.rooms.state_res import InMemoryStateResStore, resolve_state
from roost.rooms.versions import KNOWN_ROOM_VERSIONS, RoomVersion
from roost.storage.room_pages import RoomPageStore
from tests.server_harness import start_server

REMOTE_KEY = generate_signing_key("r1")
# IP literals in a private range: the federation sender refuses them at once (no DNS).
BOB = "@bob:10.0.0.9"
CAROL = "@carol:10.0.0.9"
ALICE = "@alice:test.roost"


def remote_event(version: RoomVersion, room_id: str | None, sender: str, event_type: str,
                 content: dict[str, Any], state_key: str | None, *, prevs: list[str],
                 state: dict[tuple[str, str], str], depth: int, ts: int = 1_000) -> Event:
    """An event built and signed elsewhere, its auth events picked from `state`."""
    pdu = build_event_pdu(
        version, room_id, sender, event_type, content, state_key, prev_event_ids=prevs,
        auth_event_ids=select_auth_event_ids(version, event_type, sender, state_key, content,
                                             state),
        depth=depth, origin_server_ts=ts)
    _, signed = finalize_pdu(pdu, version, server_name_of(sender), REMOTE_KEY)
    return Event.from_pdu(signed, version)


class Remote:
    """Builds remote events on top of what the engine holds for a room."""

    def __init__(self, engine: RoomEngine, room_id: str, version: RoomVersion) -> None:
        self.engine, self.room_id, self.version = engine, room_id, version
        self.ts = 10_000

    async def make(self, sender: str, event_type: str, content: dict[str, Any],
                   state_key: str | None = None, prevs: list[str] | None = None,
                   state: dict[tuple[str, str], str] | None = None) -> Event:
        head = await self.engine._head(self.room_id)
        self.ts += 1
        prevs = list(head.extremities) if prevs is None else prevs
        loaded = await self.engine.get_events(prevs)
        depth = max([le.event.depth for le in loaded.values()] or [head.depth + 1]) + 1
        return remote_event(self.version, self.room_id, sender, event_type, content, state_key,
                            prevs=prevs, state=dict(head.state) if state is None else state,
                            depth=depth, ts=self.ts)


async def local_room(testcase: TestCase, version: str = "11") -> tuple[Any, RoomEngine, str, Remote]:
    server = await start_server(testcase)
    engine = server.hs.engine
    v = KNOWN_ROOM_VERSIONS[version]
    room_id, _ = await engine.create_room(v, [
        NewEvent(ALICE, "m.room.create", create_event_content(v, ALICE), ""),
        NewEvent(ALICE, "m.room.member", {"membership": "join"}, ALICE),
        NewEvent(ALICE, "m.room.power_levels",
                 {"users": {} if v.hydra else {ALICE: 100}, "events": {"m.room.topic": 0}}, ""),
        NewEvent(ALICE, "m.room.join_rules", {"join_rule": "public"}, ""),
    ])
    return server, engine, room_id, Remote(engine, room_id, v)


async def rows(server: Any, sql: str, *args: object) -> list[tuple]:
    return await server.hs.db.run("test", lambda t: t.query(sql, args))


class IngestRemoteTests(TestCase):
    async def test_join_and_message_are_accepted_and_served(self) -> None:
        for version in ("10", "11", "12"):
            server, engine, room_id, remote = await local_room(self, version)
            join = await remote.make(BOB, "m.room.member", {"membership": "join"}, BOB)
            out = await engine.ingest_remote(room_id, [join])
            self.assertEqual(out[join.event_id].status, ACCEPTED, out[join.event_id].reason)
            self.assertEqual(await engine.membership(room_id, BOB), "join")
            message = await remote.make(BOB, "m.room.message", {"body": "hi", "msgtype": "m.text"})
            out = await engine.ingest_remote(room_id, [message])
            self.assertEqual(out[message.event_id].status, ACCEPTED)
            loaded = (await engine.get_events([message.event_id]))[message.event_id]
            self.assertIsNotNone(loaded.stream_ordering)
            self.assertEqual((await engine._head(room_id)).extremities, [message.event_id])
            # A repeat is a no-op; a local send builds on the remote event.
            out = await engine.ingest_remote(room_id, [message])
            self.assertEqual(out[message.event_id].status, KNOWN)
            local = await engine.append(room_id, NewEvent(ALICE, "m.room.message", {"body": "yo"}))
            self.assertEqual(list(local.prev_event_ids), [message.event_id])
            # Membership rows: Bob's join is visible to sync's queries.
            members = await rows(server, "SELECT membership FROM room_memberships WHERE"
                                 " room_id = %s AND user_id = %s", room_id, BOB)
            self.assertEqual(members, [("join",)])

    async def test_rejected_event_is_stored_rejected_and_stays_so(self) -> None:
        server, engine, room_id, remote = await local_room(self)
        join = await remote.make(BOB, "m.room.member", {"membership": "join"}, BOB)
        await engine.ingest_remote(room_id, [join])
        grab = await remote.make(BOB, "m.room.power_levels", {"users": {BOB: 100}}, "")
        out = await engine.ingest_remote(room_id, [grab])
        self.assertEqual(out[grab.event_id].status, REJECTED)
        state = await engine.current_state_events(room_id)
        self.assertNotEqual(state[("m.room.power_levels", "")].event_id, grab.event_id)
        loaded = (await engine.get_events([grab.event_id]))[grab.event_id]
        self.assertTrue(loaded.rejected)
        self.assertIsNone(loaded.stream_ordering)
        # Citing the rejected event as an auth event is rejected too (rule 2.3) ...
        head = await engine._head(room_id)
        cheat_state = {**head.state, ("m.room.power_levels", ""): grab.event_id}
        topic = await remote.make(BOB, "m.room.name", {"name": "mine"}, "", state=cheat_state)
        out = await engine.ingest_remote(room_id, [topic])
        self.assertEqual(out[topic.event_id].status, REJECTED)
        # ... and a fork that has the rejected event as a prev does not make it state.
        after_grab = await remote.make(BOB, "m.room.topic", {"topic": "t"}, "",
                                       prevs=[grab.event_id, join.event_id])
        out = await engine.ingest_remote(room_id, [after_grab])
        self.assertEqual(out[after_grab.event_id].status, ACCEPTED, out[after_grab.event_id].reason)
        state = await engine.current_state_events(room_id)
        self.assertNotEqual(state[("m.room.power_levels", "")].event_id, grab.event_id)
        self.assertEqual(state[("m.room.topic", "")].event_id, after_grab.event_id)
        again = await engine.ingest_remote(room_id, [grab])
        self.assertEqual(again[grab.event_id].status, KNOWN)
        (reason,) = await rows(server, "SELECT rejected_reason FROM events WHERE event_id = %s",
                               grab.event_id)
        self.assertIsNotNone(reason[0])

    async def test_soft_failed_against_current_state(self) -> None:
        server, engine, room_id, remote = await local_room(self)
        join = await remote.make(BOB, "m.room.member", {"membership": "join"}, BOB)
        await engine.ingest_remote(room_id, [join])
        await engine.append(room_id, NewEvent(ALICE, "m.room.member", {"membership": "ban"}, BOB))
        # Bob's server had not seen the ban: his message cites his join as prev.
        late = await remote.make(BOB, "m.room.message", {"body": "late"}, prevs=[join.event_id],
                                 state={**(await engine._head(room_id)).state,
                                        ("m.room.member", BOB): join.event_id})
        out = await engine.ingest_remote(room_id, [late])
        self.assertEqual(out[late.event_id].status, SOFT_FAILED, out[late.event_id].reason)
        (soft,) = await rows(server, "SELECT soft_failed FROM events WHERE event_id = %s",
                             late.event_id)
        self.assertTrue(soft[0])
        self.assertNotIn(late.event_id, (await engine._head(room_id)).extremities)
        stream = await RoomPageStore(server.hs.db).room_stream_events(room_id, 0, None, False, 100)
        self.assertNotIn(late.event_id, [s.event_id for s in stream])

    async def test_missing_prevs_and_unknown_room(self) -> None:
        server, engine, room_id, remote = await local_room(self)
        join = await remote.make(BOB, "m.room.member", {"membership": "join"}, BOB)
        message = await remote.make(BOB, "m.room.message", {"body": "x"}, prevs=[join.event_id],
                                    state={**(await engine._head(room_id)).state,
                                           ("m.room.member", BOB): join.event_id})
        out = await engine.ingest_remote(room_id, [message])
        self.assertEqual(out[message.event_id].status, MISSING)
        # Both together, in either order: the join first.
        out = await engine.ingest_remote(room_id, [message, join])
        self.assertEqual([out[join.event_id].status, out[message.event_id].status],
                         [ACCEPTED, ACCEPTED])
        with self.assertRaises(RoomError):
            await engine.ingest_remote("!nope:test.roost", [message])

    async def test_fork_is_merged_by_state_resolution(self) -> None:
        for version in ("11", "12"):
            server, engine, room_id, remote = await local_room(self, version)
            join_b = await remote.make(BOB, "m.room.member", {"membership": "join"}, BOB)
            await engine.ingest_remote(room_id, [join_b])
            base = (await engine._head(room_id)).extremities
            topic1 = await remote.make(BOB, "m.room.topic", {"topic": "one"}, "", prevs=base)
            topic2 = await remote.make(CAROL, "m.room.topic", {"topic": "two"}, "", prevs=base)
            # Carol was never in the room: her fork fails auth against the state before it.
            out = await engine.ingest_remote(room_id, [topic1, topic2])
            self.assertEqual(out[topic1.event_id].status, ACCEPTED)
            self.assertEqual(out[topic2.event_id].status, REJECTED)
            # A real fork: Bob and a local message on the same base.
            base = (await engine._head(room_id)).extremities
            local = await engine.append(room_id, NewEvent(ALICE, "m.room.topic", {"topic": "L"}, ""))
            remote_topic = await remote.make(BOB, "m.room.topic", {"topic": "R"}, "", prevs=base)
            out = await engine.ingest_remote(room_id, [remote_topic])
            self.assertEqual(out[remote_topic.event_id].status, ACCEPTED)
            head = await engine._head(room_id)
            self.assertEqual(sorted(head.extremities),
                             sorted([local.event_id, remote_topic.event_id]))
            # The current state is what state resolution says over the two forks.
            all_ids = await rows(server, "SELECT event_id FROM events WHERE room_id = %s"
                                 " AND rejected_reason IS NULL", room_id)
            loaded = await engine.get_events([r[0] for r in all_ids])
            store = InMemoryStateResStore(le.event for le in loaded.values())
            before = {**head.state}
            fork_a = {**before, ("m.room.topic", ""): local.event_id}
            fork_b = {**before, ("m.room.topic", ""): remote_topic.event_id}
            expected = await resolve_state(room_id, KNOWN_ROOM_VERSIONS[version],
                                           [fork_a, fork_b], store)
            self.assertEqual(head.state[("m.room.topic", "")], expected[("m.room.topic", "")])
            current = dict(await rows(server, "SELECT type || '|' || state_key, event_id FROM"
                                      " current_state WHERE room_id = %s", room_id))
            self.assertEqual(current["m.room.topic|"], expected[("m.room.topic", "")])
            # The next local event merges the fork; a restart reloads the same state.
            merged = await engine.append(room_id, NewEvent(ALICE, "m.room.message", {"body": "m"}))
            self.assertEqual(sorted(merged.prev_event_ids), sorted(head.extremities))
            engine._heads.clear()
            reloaded = await engine._head(room_id)
            self.assertEqual(reloaded.state, head.state)


class RemoteRoomTests(TestCase):
    def _remote_room(self, version: RoomVersion, join_rule: str = "public") -> list[Event]:
        events: list[Event] = []
        state: dict[tuple[str, str], str] = {}
        room_id = None if version.hydra else "!far:10.0.0.9"

        def add(sender: str, event_type: str, content: dict[str, Any], key: str) -> Event:
            event = remote_event(version, room_id if event_type != "m.room.create" or not
                                 version.hydra else None, sender, event_type, content, key,
                                 prevs=[events[-1].event_id] if events else [], state=state,
                                 depth=len(events) + 1, ts=1000 + len(events))
            events.append(event)
            state[(event.type, key)] = event.event_id
            return event

        create = add(BOB, "m.room.create", create_event_content(version, BOB), "")
        room_id = create.room_id
        add(BOB, "m.room.member", {"membership": "join"}, BOB)
        add(BOB, "m.room.power_levels", {"users": {} if version.hydra else {BOB: 100}}, "")
        add(BOB, "m.room.join_rules", {"join_rule": join_rule}, "")
        return events

    async def test_create_remote_room_then_follow_it(self) -> None:
        for identifier in ("10", "12"):
            version = KNOWN_ROOM_VERSIONS[identifier]
            server = await start_server(self)
            engine = server.hs.engine
            events = self._remote_room(version)
            room_id = events[0].room_id
            state = {(e.type, e.state_key): e.event_id for e in events}
            join = remote_event(version, room_id, ALICE, "m.room.member", {"membership": "join"},
                                ALICE, prevs=[events[-1].event_id], state=state, depth=5)
            outcome = await engine.create_remote_room(version, join, events, events[:3])
            self.assertEqual(outcome.status, ACCEPTED, outcome.reason)
            self.assertEqual(outcome.state_before, state)
            self.assertEqual(await engine.membership(room_id, ALICE), "join")
            self.assertEqual(await engine.room_version(room_id), version)
            loaded = await engine.get_events([e.event_id for e in events])
            self.assertTrue(all(not le.rejected for le in loaded.values()))
            (outliers,) = await rows(server, "SELECT count(*) FROM events WHERE room_id = %s"
                                     " AND outlier", room_id)
            self.assertEqual(outliers[0], 4)
            self.assertEqual(await engine.state_at_event(join.event_id), state)
            # A message from the remote side on top of the join.
            message = remote_event(version, room_id, BOB, "m.room.message", {"body": "welcome"},
                                   None, prevs=[join.event_id],
                                   state={**state, ("m.room.member", ALICE): join.event_id},
                                   depth=6)
            out = await engine.ingest_remote(room_id, [message])
            self.assertEqual(out[message.event_id].status, ACCEPTED, out[message.event_id].reason)
            reply = await engine.append(room_id, NewEvent(ALICE, "m.room.message", {"body": "hi"}))
            self.assertEqual(list(reply.prev_event_ids), [message.event_id])

    async def test_a_join_that_fails_auth_stores_nothing(self) -> None:
        version = KNOWN_ROOM_VERSIONS["11"]
        server = await start_server(self)
        engine = server.hs.engine
        events = self._remote_room(version, join_rule="invite")
        room_id = events[0].room_id
        state = {(e.type, e.state_key): e.event_id for e in events}
        join = remote_event(version, room_id, ALICE, "m.room.member", {"membership": "join"},
                            ALICE, prevs=[events[-1].event_id], state=state, depth=5)
        with self.assertRaises(RoomError) as e:
            await engine.create_remote_room(version, join, events, events[:3])
        self.assertEqual(e.exception.status, 403)
        self.assertIsNone(await engine.room_version(room_id))

    async def test_outliers_with_forged_auth_are_rejected(self) -> None:
        version = KNOWN_ROOM_VERSIONS["11"]
        server = await start_server(self)
        engine = server.hs.engine
        events = self._remote_room(version)
        room_id = events[0].room_id
        state = {(e.type, e.state_key): e.event_id for e in events}
        # Carol (never joined) "sets" the name: present in the state sent, but rejected.
        name = remote_event(version, room_id, CAROL, "m.room.name", {"name": "x"}, "",
                            prevs=[events[-1].event_id], state=state, depth=5)
        state[("m.room.name", "")] = name.event_id
        join = remote_event(version, room_id, ALICE, "m.room.member", {"membership": "join"},
                            ALICE, prevs=[name.event_id], state=state, depth=6)
        outcome = await engine.create_remote_room(version, join, [*events, name], events[:3])
        self.assertEqual(outcome.status, ACCEPTED)
        loaded = (await engine.get_events([name.event_id]))[name.event_id]
        self.assertTrue(loaded.rejected)
        current = await engine.current_state_events(room_id)
        self.assertEqual(current[("m.room.member", ALICE)].event_id, join.event_id)
        _ = OUTLIER


class BuildForRemoteTests(TestCase):
    async def test_make_join_template(self) -> None:
        server, engine, room_id, remote = await local_room(self, "12")
        version, template = await engine.build_for_remote(
            room_id, BOB, "m.room.member", {"membership": "join"}, BOB)
        self.assertEqual(version.identifier, "12")
        head = await engine._head(room_id)
        self.assertEqual(template["prev_events"], head.extremities)
        self.assertNotIn("signatures", template)
        self.assertNotIn("hashes", template)
        self.assertEqual(template["state_key"], BOB)
        # Bob's server signs it; the engine accepts it.
        _, signed = finalize_pdu(template, version, "10.0.0.9", REMOTE_KEY)
        join = Event.from_pdu(signed, version)
        out = await engine.ingest_remote(room_id, [join])
        self.assertEqual(out[join.event_id].status, ACCEPTED)

    async def test_template_for_a_banned_user_is_refused(self) -> None:
        server, engine, room_id, remote = await local_room(self)
        await engine.append(room_id, NewEvent(ALICE, "m.room.member", {"membership": "ban"}, BOB))
        with self.assertRaises(RoomError) as e:
            await engine.build_for_remote(room_id, BOB, "m.room.member", {"membership": "join"},
                                          BOB)
        self.assertEqual(e.exception.status, 403)


class BackfilledHistoryTests(TestCase):
    """store_backfilled: history is checked against the state before each event (step 5),
    not only its own auth events, and gets state groups, without moving the room's head."""

    async def _room_with_a_ban(self) -> tuple[Any, RoomEngine, str, Remote, Any, dict, str]:
        server, engine, room_id, remote = await local_room(self)
        join = await remote.make(BOB, "m.room.member", {"membership": "join"}, BOB)
        await engine.ingest_remote(room_id, [join])
        joined_state = dict((await engine._head(room_id)).state)
        ban = await engine.append(room_id, NewEvent(ALICE, "m.room.member",
                                                    {"membership": "ban"}, BOB))
        return server, engine, room_id, remote, join, joined_state, ban.event_id

    async def test_history_that_the_state_before_it_forbids_is_rejected(self) -> None:
        server, engine, room_id, remote, join, joined_state, ban_id = await self._room_with_a_ban()
        head_before = (await engine._head(room_id)).extremities
        # After the ban, citing the join as its auth: its own auth events allow it.
        after_ban = await remote.make(BOB, "m.room.message", {"body": "banned"},
                                      prevs=[ban_id], state=joined_state)
        # Before the ban: allowed by both.
        before_ban = await remote.make(BOB, "m.room.message", {"body": "fine"},
                                       prevs=[join.event_id], state=joined_state)
        out = await engine.store_backfilled(room_id, [after_ban, before_ban])
        self.assertEqual(out[after_ban.event_id], REJECTED)
        self.assertEqual(out[before_ban.event_id], ACCEPTED)
        stored = await rows(server, "SELECT event_id, stream_ordering, state_group,"
                            " rejected_reason IS NOT NULL FROM events WHERE event_id = ANY(%s)",
                            [after_ban.event_id, before_ban.event_id])
        by_id = {r[0]: r[1:] for r in stored}
        position, group, rejected = by_id[before_ban.event_id]
        self.assertLess(position, 0)
        self.assertIsNotNone(group)
        self.assertFalse(rejected)
        self.assertEqual(by_id[after_ban.event_id][0], None)
        self.assertTrue(by_id[after_ban.event_id][2])
        # History moves nothing: the head and the current state are as they were.
        self.assertEqual((await engine._head(room_id)).extremities, head_before)
        self.assertEqual(await engine.membership(room_id, BOB), "ban")

    async def test_the_state_given_for_an_event_after_a_gap_is_used(self) -> None:
        _, engine, room_id, remote, _join, joined_state, _ban = await self._room_with_a_ban()
        banned_state = dict((await engine._head(room_id)).state)
        unknown_prev = "$" + "x" * 43
        event = await remote.make(BOB, "m.room.message", {"body": "after a gap"},
                                  prevs=[unknown_prev], state=joined_state)
        out = await engine.store_backfilled(room_id, [event],
                                            state_before={event.event_id: banned_state})
        self.assertEqual(out[event.event_id], REJECTED)
        # Without a state before it, its own auth events are all there is to go on.
        other = await remote.make(BOB, "m.room.message", {"body": "no state known"},
                                  prevs=[unknown_prev], state=joined_state)
        out = await engine.store_backfilled(room_id, [other])
        self.assertEqual(out[other.event_id], ACCEPTED)


class RemoteRedactionTests(TestCase):
    """Spec "Handling redactions": an authorised redaction applies only if its sender has
    the redact level or shares the original sender's server, and never across rooms."""

    async def test_remote_redactions_apply_only_where_the_spec_lets_them(self) -> None:
        server, engine, room_id, remote = await local_room(self, "11")
        join = await remote.make(BOB, "m.room.member", {"membership": "join"}, BOB)
        await engine.ingest_remote(room_id, [join])
        mine = await engine.append(room_id, NewEvent(ALICE, "m.room.message", {"body": "a"}))
        bobs = await remote.make(BOB, "m.room.message", {"body": "b"})
        await engine.ingest_remote(room_id, [bobs])
        other_room, _ = await engine.create_room(KNOWN_ROOM_VERSIONS["11"], [
            NewEvent(ALICE, "m.room.create", create_event_content(KNOWN_ROOM_VERSIONS["11"],
                                                                  ALICE), ""),
            NewEvent(ALICE, "m.room.member", {"membership": "join"}, ALICE)])
        elsewhere = await engine.append(other_room, NewEvent(ALICE, "m.room.message",
                                                             {"body": "c"}))
        for target in (mine.event_id, elsewhere.event_id, bobs.event_id):
            redaction = await remote.make(BOB, "m.room.redaction", {"redacts": target})
            out = await engine.ingest_remote(room_id, [redaction])
            self.assertEqual(out[redaction.event_id].status, ACCEPTED)
        loaded = await engine.get_events([mine.event_id, elsewhere.event_id, bobs.event_id])
        # Bob (another server, power 0) may not redact Alice's message, nor anything in
        # another room; his own message he may.
        self.assertIsNone(loaded[mine.event_id].redacted_by)
        self.assertIsNone(loaded[elsewhere.event_id].redacted_by)
        self.assertIsNotNone(loaded[bobs.event_id].redacted_by)
