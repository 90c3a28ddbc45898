"""The remote-event checklist (rooms/ingest.py), step by step, for room versions 10-12."""

from __future__ import annotations

from typing import Any

from signedjson.key import get_verify_key
from twisted.trial.unittest import TestCase

from roost.keys.remote import VerifyRequest
from roost.rooms.events import Event
from roost.rooms.hashing import verify_event_signature
from roost.rooms.ingest import (
    IngestError,
    auth_slice,
    check_against_auth_events,
    check_against_state_before,
    check_content_hash_or_redact,
    check_format,
    is_soft_failed,
    signatures_to_verify,
    sort_by_auth,
    sort_by_prevs,
)
from roost.rooms.versions import KNOWN_ROOM_VERSIONS, RoomVersion
from tests.rooms.test_auth import ALICE, BOB, CAROL, KEY, Room

VERSIONS = [KNOWN_ROOM_VERSIONS[v] for v in ("10", "11", "12")]


def public_room(version: RoomVersion) -> Room:
    room = Room(version)
    room.set_membership(ALICE, "join")
    room.power_levels(users={ALICE: 100})
    room.force("m.room.join_rules", ALICE, {"join_rule": "public"}, "")
    return room


def by_id(room: Room) -> dict[str, Event]:
    return dict(room.events)


class FormatTests(TestCase):
    def test_step1_well_formed_event_parses(self) -> None:
        for version in VERSIONS:
            room = public_room(version)
            event = room.member(BOB, BOB, "join")
            parsed = check_format(dict(event.pdu, unsigned={"age": 5}), version)
            self.assertEqual(parsed.event_id, event.event_id)

    def test_step1_malformed_event_is_dropped(self) -> None:
        for version in VERSIONS:
            room = public_room(version)
            pdu: dict[str, Any] = dict(room.member(BOB, BOB, "join").pdu)
            pdu["depth"] = "1"
            with self.assertRaises(IngestError) as e:
                check_format(pdu, version)
            self.assertEqual(e.exception.step, 1)

    def test_step1_event_of_another_room_is_dropped(self) -> None:
        room = public_room(VERSIONS[0])
        event = room.member(BOB, BOB, "join")
        with self.assertRaises(IngestError):
            check_format(event.pdu, VERSIONS[0], room_id="!other:a.example")


class SignatureTests(TestCase):
    def test_step2_sender_server_must_sign_the_redacted_event(self) -> None:
        for version in VERSIONS:
            room = public_room(version)
            event = room.member(BOB, BOB, "join")
            checks = signatures_to_verify(event)
            self.assertEqual([c.server_name for c in checks], ["b.example"])
            self.assertEqual(checks[0].min_valid_until_ms, event.origin_server_ts)
            # The object to verify is the redacted event, and the signature covers it.
            self.assertNotIn("displayname", checks[0].redacted_pdu["content"])
            verify_event_signature(event.pdu, version, "b.example", get_verify_key(KEY))
            VerifyRequest("b.example", checks[0].redacted_pdu, 0)  # usable as a key ring request

    def test_step2_restricted_join_needs_the_authorising_server_too(self) -> None:
        room = public_room(VERSIONS[0])
        event = room.member(BOB, BOB, "join", join_authorised_via_users_server=CAROL)
        self.assertEqual([c.server_name for c in signatures_to_verify(event)],
                         ["b.example", "c.example"])


class HashTests(TestCase):
    def test_step3_matching_hash_keeps_the_event(self) -> None:
        room = public_room(VERSIONS[1])
        event = room.make("m.room.message", ALICE, {"body": "hi", "msgtype": "m.text"})
        kept, redacted = check_content_hash_or_redact(event)
        self.assertFalse(redacted)
        self.assertIs(kept, event)

    def test_step3_mismatch_means_the_redacted_event(self) -> None:
        for version in VERSIONS:
            room = public_room(version)
            event = room.make("m.room.message", ALICE, {"body": "hi", "msgtype": "m.text"})
            tampered = Event.from_pdu(dict(event.pdu, content={"body": "evil"}), version)
            # Content is not covered by the reference hash: the id stays the same.
            self.assertEqual(tampered.event_id, event.event_id)
            result, redacted = check_content_hash_or_redact(tampered)
            self.assertTrue(redacted)
            self.assertEqual(result.content, {})
            self.assertEqual(result.event_id, event.event_id)


class AuthEventsTests(TestCase):
    def test_step4_passes_against_its_auth_events(self) -> None:
        for version in VERSIONS:
            room = public_room(version)
            event = room.member(BOB, BOB, "join")
            check_against_auth_events(event, by_id(room), create_event=room.create)

    def test_step4_unknown_auth_event(self) -> None:
        room = public_room(VERSIONS[0])
        event = room.member(BOB, BOB, "join")
        with self.assertRaises(IngestError) as e:
            check_against_auth_events(event, {}, create_event=room.create)
        self.assertEqual(e.exception.step, 4)

    def test_step4_auth_events_of_another_room_reject_in_every_version(self) -> None:
        for version in VERSIONS:
            room = public_room(version)
            # A second room: a different create event, so a different room (and v12 id).
            other = Room(version, dict(room.create.content, extra=1))
            if not version.hydra:
                other = Room(version)
                other.room_id = "!other:a.example"
                other.create = other.force("m.room.create", ALICE, dict(room.create.content), "")
            other.set_membership(ALICE, "join")
            other.power_levels(users={ALICE: 100})
            other.force("m.room.join_rules", ALICE, {"join_rule": "public"}, "")
            self.assertNotEqual(room.room_id, other.room_id)
            # Bob's join in `room` citing the other room's join rules and power levels.
            room.state[("m.room.join_rules", "")] = other.state[("m.room.join_rules", "")]
            room.state[("m.room.power_levels", "")] = other.state[("m.room.power_levels", "")]
            event = room.member(BOB, BOB, "join")
            known = {**by_id(room), **by_id(other)}
            with self.assertRaises(IngestError) as e:
                check_against_auth_events(event, known, create_event=room.create)
            self.assertIn("belongs to room", e.exception.reason)

    def test_step4_rejected_auth_event_rejects(self) -> None:
        room = public_room(VERSIONS[1])
        event = room.member(BOB, BOB, "join")
        join_rules = room.state[("m.room.join_rules", "")].event_id
        with self.assertRaises(IngestError):
            check_against_auth_events(event, by_id(room), rejected_event_ids={join_rules})

    def test_step4_not_allowed_by_its_auth_events(self) -> None:
        for version in VERSIONS:
            room = public_room(version)
            event = room.make("m.room.message", BOB, {"body": "not a member"})
            with self.assertRaises(IngestError) as e:
                check_against_auth_events(event, by_id(room), create_event=room.create)
            self.assertEqual(e.exception.step, 4)


class StateTests(TestCase):
    def test_step5_state_before_decides(self) -> None:
        for version in VERSIONS:
            room = public_room(version)
            room.send("m.room.member", BOB, {"membership": "join"}, BOB)
            message = room.make("m.room.message", BOB, {"body": "hi"})
            check_against_state_before(message, room.state)
            # In a state where Bob was banned, the same event is rejected.
            banned = dict(room.state)
            banned[("m.room.member", BOB)] = room.make(
                "m.room.member", ALICE, {"membership": "ban"}, BOB)
            with self.assertRaises(IngestError) as e:
                check_against_state_before(message, banned)
            self.assertEqual(e.exception.step, 5)

    def test_step5_create_event_only_starts_a_room(self) -> None:
        room = public_room(VERSIONS[0])
        check_against_state_before(room.create, {})
        with self.assertRaises(IngestError):
            check_against_state_before(room.create, room.state)

    def test_step6_soft_fail_against_current_state(self) -> None:
        for version in VERSIONS:
            room = public_room(version)
            room.send("m.room.member", BOB, {"membership": "join"}, BOB)
            message = room.make("m.room.message", BOB, {"body": "hi"})
            self.assertIsNone(is_soft_failed(message, room.state))
            room.send("m.room.member", ALICE, {"membership": "ban"}, BOB)
            self.assertIsNotNone(is_soft_failed(message, room.state))

    def test_auth_slice_takes_only_what_the_rules_read(self) -> None:
        room = public_room(VERSIONS[1])
        room.force("m.room.topic", ALICE, {"topic": "t"}, "")
        event = room.member(BOB, BOB, "join")
        self.assertEqual(set(auth_slice(event, room.state)), {
            ("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", BOB),
            ("m.room.join_rules", "")} & set(room.state) | {("m.room.create", "")})


class OrderingTests(TestCase):
    def test_sorts_put_parents_first(self) -> None:
        room = public_room(VERSIONS[2])
        events = list(room.events.values())
        self.assertEqual(sort_by_auth(reversed(events))[0], room.create)
        self.assertEqual(sort_by_prevs(reversed(events)), events)
