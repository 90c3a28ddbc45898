"""Local events built on a room's head: what Event.from_local_build still checks, and that
its events are those the full check (Event.from_built) makes of the same PDU."""

from __future__ import annotations

from typing import Any

from signedjson.key import generate_signing_key
from twisted.trial.unittest import TestCase

from roost.rooms import events as events_module
from roost.rooms.builder import create_event_content
from roost.rooms.engine_types import IdAllocator, NewEvent, RoomError, RoomHead
from roost.rooms.events import MAX_EVENT_BYTES, Event
from roost.rooms.hashing import CanonicalJSONError
from roost.rooms.local_build import LocalEventBuilder
from roost.rooms.versions import KNOWN_ROOM_VERSIONS, RoomVersion

KEY = generate_signing_key("k1")
ALICE = "@alice:a.example"
ROOM = "!room:a.example"


class FrozenClock:
    def seconds(self) -> float:
        return 1_700_000_000.0


def room(version: RoomVersion) -> tuple[LocalEventBuilder, RoomHead]:
    """A builder and the head of a public room Alice created and two others joined."""
    builder = LocalEventBuilder("a.example", KEY, FrozenClock(), IdAllocator(0))
    head = RoomHead(version, {}, {}, [], 0, None, 0)
    requests = [
        NewEvent(ALICE, "m.room.create", create_event_content(version, ALICE), ""),
        NewEvent(ALICE, "m.room.member", {"membership": "join"}, ALICE),
        NewEvent(ALICE, "m.room.power_levels", {"users": {} if version.hydra else {ALICE: 100}},
                 ""),
        NewEvent(ALICE, "m.room.join_rules", {"join_rule": "public"}, ""),
        *[NewEvent(u, "m.room.member", {"membership": "join"}, u)
          for u in ("@bob:a.example", "@carol:a.example")],
    ]
    room_id = None if version.hydra else ROOM
    for request in requests:
        event = builder.build(room_id, head, request)
        room_id = event.room_id
        builder.advance(head, event)
    return builder, head


def kinds() -> list[NewEvent]:
    """A send of every shape a client makes: message, state, redaction, relation."""
    return [
        NewEvent(ALICE, "m.room.message", {"msgtype": "m.text", "body": "hi", "n": [1, {"a": None}]}),
        NewEvent(ALICE, "m.room.topic", {"topic": "t"}, ""),
        NewEvent(ALICE, "m.room.member", {"membership": "leave"}, "@bob:a.example"),
        NewEvent(ALICE, "m.room.redaction", {"reason": "r"}, redacts="$target"),
        NewEvent(ALICE, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation",
                                                        "event_id": "$x", "key": "k"}}),
    ]


class FromLocalBuildTests(TestCase):
    def test_it_makes_the_event_the_full_check_makes(self) -> None:
        for version in KNOWN_ROOM_VERSIONS.values():
            builder, head = room(version)
            for request in kinds():
                event = builder.build(head_room(head), head, request)
                full = Event.from_built(event.pdu, version, event.event_id, walked=True)
                self.assertEqual((event.fields, event.canonical_bytes, event.event_id,
                                  event.room_id, event.unsigned),
                                 (full.fields, full.canonical_bytes, full.event_id,
                                  full.room_id, full.unsigned), (version.identifier, request))

    def test_the_builders_own_fields_are_not_checked_again(self) -> None:
        def refuse(*_: Any) -> None:
            raise AssertionError("_validate_format ran on a local build")

        self.patch(events_module, "_validate_format", refuse)
        builder, head = room(KNOWN_ROOM_VERSIONS["11"])
        for request in kinds():
            builder.build(ROOM, head, request)

    def test_what_the_request_gave_is_still_refused(self) -> None:
        long_id = "@" + "u" * 250 + ":a.example"
        cases = [
            (NewEvent(ALICE, "t" * 256, {}), 413, "M_TOO_LARGE"),
            (NewEvent(ALICE, "m.room.topic", {"topic": "t"}, "é" * 128), 413, "M_TOO_LARGE"),
            (NewEvent(ALICE, "m.room.message", {"body": "x" * MAX_EVENT_BYTES}), 413,
             "M_TOO_LARGE"),
            (NewEvent(ALICE, "m.room.redaction", {}, redacts="$" + "e" * 255), 413,
             "M_TOO_LARGE"),
            (NewEvent("alice:a.example", "m.room.message", {}), 400, "M_BAD_JSON"),
            (NewEvent(long_id, "m.room.message", {}), 413, "M_TOO_LARGE"),
        ]
        for version in (KNOWN_ROOM_VERSIONS["10"], KNOWN_ROOM_VERSIONS["11"]):
            builder, head = room(version)
            for request, status, errcode in cases:
                with self.assertRaises(RoomError, msg=request) as caught:
                    builder.build(ROOM, head, request)
                self.assertEqual((caught.exception.status, caught.exception.errcode),
                                 (status, errcode), (version.identifier, request))

    def test_content_canonical_json_cannot_carry_is_refused(self) -> None:
        builder, head = room(KNOWN_ROOM_VERSIONS["11"])
        for content in ({"n": 1.5}, {"n": [2**53]}, {"n": {"m": -(2**53)}}, {"b": "\ud800"}):
            with self.assertRaises(CanonicalJSONError, msg=content):  # the engine's 400
                builder.build(ROOM, head, NewEvent(ALICE, "m.room.message", content))

    def test_more_prev_events_than_an_event_may_cite_are_refused_as_before(self) -> None:
        builder, head = room(KNOWN_ROOM_VERSIONS["11"])
        head.extremities = [f"$p{i}" for i in range(21)]
        with self.assertRaises(RoomError) as caught:
            builder.build(ROOM, head, NewEvent(ALICE, "m.room.message", {"body": "hi"}))
        self.assertEqual((caught.exception.status, caught.exception.errcode), (400, "M_BAD_JSON"))


def head_room(head: RoomHead) -> str:
    """The room id of the events on `head` (a v12 room's is its create event's)."""
    return next(iter(head.state_events.values())).room_id
