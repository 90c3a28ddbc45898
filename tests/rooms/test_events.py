"""Event.from_pdu: form and size validation, ids and properties computed once."""

import copy
import json
import sys
from typing import Any

from signedjson.key import generate_signing_key
from twisted.trial.unittest import TestCase

from roost.rooms.events import (
    MAX_EVENT_BYTES,
    CanonicalJSONError,
    Event,
    EventFormatError,
    canonical_json,
    is_valid_server_name,
    is_valid_user_id,
    parse_canonical,
    room_id_from_create_event_id,
)
from roost.rooms.hashing import add_content_hash, compute_event_id, sign_event
from roost.rooms.versions import KNOWN_ROOM_VERSIONS

V10 = KNOWN_ROOM_VERSIONS["10"]
V11 = KNOWN_ROOM_VERSIONS["11"]
V12 = KNOWN_ROOM_VERSIONS["12"]
ALL_VERSIONS = (V10, V11, V12)
KEY = generate_signing_key("k")


def finished(pdu: dict[str, Any], version: Any = V11) -> dict[str, Any]:
    return sign_event(add_content_hash(pdu), version, "a.example", KEY)


def message(**overrides: Any) -> dict[str, Any]:
    pdu: dict[str, Any] = {
        "type": "m.room.message",
        "room_id": "!r:a.example",
        "sender": "@u:a.example",
        "content": {"body": "hello"},
        "prev_events": ["$prev"],
        "auth_events": ["$a1", "$a2"],
        "depth": 7,
        "origin_server_ts": 1700000000000,
    }
    pdu.update(overrides)
    return finished(pdu)


class CanonicalJSONReexportTests(TestCase):
    def test_events_offers_the_canonical_json_helper(self) -> None:
        self.assertEqual(canonical_json({"b": 1, "a": [2]}), b'{"a":[2],"b":1}')
        self.assertRaises(CanonicalJSONError, canonical_json, {"n": 2**53})


class PropertiesTests(TestCase):
    def test_message_event_properties(self) -> None:
        pdu = message()
        event = Event.from_pdu(pdu, V11)
        self.assertEqual(event.event_id, compute_event_id(pdu, V11))
        self.assertEqual(event.room_id, "!r:a.example")
        self.assertEqual(event.type, "m.room.message")
        self.assertIsNone(event.state_key)
        self.assertFalse(event.is_state)
        self.assertEqual(event.sender, "@u:a.example")
        self.assertEqual(event.content, {"body": "hello"})
        self.assertEqual(event.prev_event_ids, ("$prev",))
        self.assertEqual(event.auth_event_ids, ("$a1", "$a2"))
        self.assertEqual(event.depth, 7)
        self.assertEqual(event.origin_server_ts, 1700000000000)
        self.assertIsNone(event.redacts)
        self.assertIsNone(event.membership)
        self.assertIs(event.version, V11)
        self.assertEqual(event.canonical_bytes, canonical_json(pdu))

    def test_state_event_with_empty_state_key_is_state(self) -> None:
        event = Event.from_pdu(message(type="m.room.topic", state_key=""), V11)
        self.assertTrue(event.is_state)
        self.assertEqual(event.state_key, "")

    def test_membership_is_read_from_member_events_only(self) -> None:
        member = message(
            type="m.room.member", state_key="@u:a.example", content={"membership": "join"}
        )
        self.assertEqual(Event.from_pdu(member, V11).membership, "join")
        lookalike = message(type="m.room.topic", state_key="", content={"membership": "join"})
        self.assertIsNone(Event.from_pdu(lookalike, V11).membership)

    def test_redacts_is_top_level_in_v10(self) -> None:
        pdu = message(type="m.room.redaction", content={"redacts": "$wrong"}, redacts="$target")
        self.assertEqual(Event.from_pdu(pdu, V10).redacts, "$target")

    def test_redacts_is_in_content_from_v11(self) -> None:
        pdu = message(type="m.room.redaction", content={"redacts": "$target"}, redacts="$wrong")
        for version in (V11, V12):
            self.assertEqual(Event.from_pdu(pdu, version).redacts, "$target")

    def test_redacts_is_none_for_other_event_types(self) -> None:
        pdu = message(content={"redacts": "$target"}, redacts="$target")
        self.assertIsNone(Event.from_pdu(pdu, V11).redacts)

    def test_unsigned_is_kept_apart_from_the_pdu(self) -> None:
        pdu = dict(message(), unsigned={"age": 10})
        event = Event.from_pdu(pdu, V11)
        self.assertNotIn("unsigned", event.pdu)
        self.assertEqual(event.unsigned, {"age": 10})
        self.assertEqual(event.event_id, compute_event_id(pdu, V11))

    def test_pdu_is_a_private_copy(self) -> None:
        pdu = message()
        event = Event.from_pdu(pdu, V11)
        pdu["content"]["body"] = "changed later"
        self.assertEqual(event.content, {"body": "hello"})

    def test_event_is_frozen(self) -> None:
        event = Event.from_pdu(message(), V11)
        with self.assertRaises(AttributeError):
            event.event_id = "$other"  # type: ignore[misc]

    def test_events_compare_and_hash_by_event_id(self) -> None:
        pdu = message()
        one, again = Event.from_pdu(pdu, V11), Event.from_pdu(copy.deepcopy(pdu), V11)
        other = Event.from_pdu(message(depth=8), V11)
        self.assertEqual(one, again)
        self.assertEqual(len({one, again, other}), 2)
        self.assertNotEqual(one, other)

    def test_the_same_pdu_has_different_ids_under_v10_and_v11_when_origin_is_set(self) -> None:
        pdu = message(origin="a.example")
        self.assertNotEqual(Event.from_pdu(pdu, V10).event_id, Event.from_pdu(pdu, V11).event_id)

    def test_redacted_keeps_the_event_id_and_strips_content(self) -> None:
        for version in ALL_VERSIONS:
            event = Event.from_pdu(message(), version)
            redacted = event.redacted()
            self.assertEqual(redacted.event_id, event.event_id)
            self.assertEqual(redacted.content, {})

    def test_a_redacted_v10_redaction_is_still_a_valid_event(self) -> None:
        pdu = finished(
            {
                "type": "m.room.redaction",
                "room_id": "!r:a.example",
                "sender": "@u:a.example",
                "content": {"reason": "spam"},
                "redacts": "$target",
                "prev_events": [],
                "auth_events": [],
                "depth": 2,
                "origin_server_ts": 1,
            },
            V10,
        )
        redacted = Event.from_pdu(pdu, V10).redacted()
        self.assertIsNone(redacted.redacts)


class HydraCreateEventTests(TestCase):
    def create_pdu(self) -> dict[str, Any]:
        return finished(
            {
                "type": "m.room.create",
                "sender": "@u:a.example",
                "state_key": "",
                "content": {"room_version": "12"},
                "prev_events": [],
                "auth_events": [],
                "depth": 1,
                "origin_server_ts": 1,
            },
            V12,
        )

    def test_v12_create_event_room_id_is_derived_from_its_event_id(self) -> None:
        event = Event.from_pdu(self.create_pdu(), V12)
        self.assertEqual(event.room_id, "!" + event.event_id[1:])
        self.assertEqual(room_id_from_create_event_id(event.event_id), event.room_id)

    def test_v12_create_event_without_room_id_is_well_formed(self) -> None:
        self.assertNotIn("room_id", Event.from_pdu(self.create_pdu(), V12).pdu)

    def test_other_v12_events_need_a_room_id(self) -> None:
        pdu = message()
        del pdu["room_id"]
        self.assertRaises(EventFormatError, Event.from_pdu, pdu, V12)

    def test_create_event_without_room_id_is_malformed_before_v12(self) -> None:
        for version in (V10, V11):
            self.assertRaises(EventFormatError, Event.from_pdu, self.create_pdu(), version)


# (description, change to a valid PDU, expected errcode)
def _drop(key: str) -> Any:
    return lambda pdu: pdu.pop(key)


def _set(key: str, value: Any) -> Any:
    return lambda pdu: pdu.__setitem__(key, value)


MALFORMED: list[tuple[str, Any, str]] = [
    ("no type", _drop("type"), "M_BAD_JSON"),
    ("type not a string", _set("type", 5), "M_BAD_JSON"),
    ("no sender", _drop("sender"), "M_BAD_JSON"),
    ("sender not a user id", _set("sender", "u:a.example"), "M_BAD_JSON"),
    ("sender without server", _set("sender", "@u"), "M_BAD_JSON"),
    ("sender with bad server", _set("sender", "@u:a example"), "M_BAD_JSON"),
    ("no room_id", _drop("room_id"), "M_BAD_JSON"),
    ("room_id without sigil", _set("room_id", "r:a.example"), "M_BAD_JSON"),
    ("state_key not a string", _set("state_key", 1), "M_BAD_JSON"),
    ("no content", _drop("content"), "M_BAD_JSON"),
    ("content not an object", _set("content", []), "M_BAD_JSON"),
    ("no hashes", _drop("hashes"), "M_BAD_JSON"),
    ("hashes without sha256", _set("hashes", {}), "M_BAD_JSON"),
    ("no signatures", _drop("signatures"), "M_BAD_JSON"),
    ("signatures of a server not an object", _set("signatures", {"a": "x"}), "M_BAD_JSON"),
    ("no depth", _drop("depth"), "M_BAD_JSON"),
    ("depth a boolean", _set("depth", True), "M_BAD_JSON"),
    ("depth beyond canonical range", _set("depth", 2**53), "M_BAD_JSON"),
    ("origin_server_ts a string", _set("origin_server_ts", "1"), "M_BAD_JSON"),
    ("prev_events not a list", _set("prev_events", "$p"), "M_BAD_JSON"),
    ("prev_events holds a non-id", _set("prev_events", ["p"]), "M_BAD_JSON"),
    ("more than 20 prev_events", _set("prev_events", [f"$p{i}" for i in range(21)]), "M_BAD_JSON"),
    ("more than 10 auth_events", _set("auth_events", [f"$a{i}" for i in range(11)]), "M_BAD_JSON"),
    ("a float in content", _set("content", {"n": 1.5}), "M_BAD_JSON"),
    ("an integer beyond range", _set("content", {"n": -(2**53)}), "M_BAD_JSON"),
    ("a lone surrogate", _set("content", {"body": "\ud800"}), "M_BAD_JSON"),
    ("sender over 255 bytes", _set("sender", "@" + "u" * 250 + ":a.example"), "M_TOO_LARGE"),
    ("room_id over 255 bytes", _set("room_id", "!" + "r" * 250 + ":a.example"), "M_TOO_LARGE"),
    ("type over 255 bytes", _set("type", "t" * 256), "M_TOO_LARGE"),
    ("state_key over 255 bytes", _set("state_key", "é" * 128), "M_TOO_LARGE"),
    ("prev event id over 255 bytes", _set("prev_events", ["$" + "e" * 255]), "M_TOO_LARGE"),
    ("event over 64 KiB", _set("content", {"body": "x" * MAX_EVENT_BYTES}), "M_TOO_LARGE"),
]


class MalformedEventTests(TestCase):
    def test_each_malformation_is_refused_with_its_errcode(self) -> None:
        for description, change, errcode in MALFORMED:
            pdu = message()
            change(pdu)
            with self.assertRaises(EventFormatError, msg=description) as caught:
                Event.from_pdu(pdu, V11)
            self.assertEqual(caught.exception.errcode, errcode, description)

    def test_non_object_pdu_is_bad_json(self) -> None:
        for pdu in ([], "event", None):
            with self.assertRaises(EventFormatError) as caught:
                Event.from_pdu(pdu, V11)  # type: ignore[arg-type]
            self.assertEqual(caught.exception.errcode, "M_BAD_JSON")

    def test_limits_are_inclusive(self) -> None:
        at_limit = message(
            sender="@" + "u" * 244 + ":a.example", type="t" * 255, state_key="s" * 255
        )
        self.assertEqual(len(at_limit["sender"]), 255)
        Event.from_pdu(at_limit, V11)

    def test_whole_event_at_exactly_65536_bytes_is_accepted(self) -> None:
        pdu = message(content={"body": ""})
        padding = MAX_EVENT_BYTES - len(canonical_json(pdu))
        pdu["content"]["body"] = "x" * padding
        self.assertEqual(len(canonical_json(pdu)), MAX_EVENT_BYTES)
        Event.from_pdu(pdu, V11)
        pdu["content"]["body"] += "x"
        self.assertRaises(EventFormatError, Event.from_pdu, pdu, V11)

    def test_unsigned_does_not_count_towards_the_size_limit(self) -> None:
        pdu = dict(message(), unsigned={"big": "x" * MAX_EVENT_BYTES})
        Event.from_pdu(pdu, V11)

    def test_redaction_with_non_string_redacts_is_bad_json(self) -> None:
        v10 = message(type="m.room.redaction", redacts=5)
        self.assertRaises(EventFormatError, Event.from_pdu, v10, V10)
        v11 = message(type="m.room.redaction", content={"redacts": ["$x"]})
        self.assertRaises(EventFormatError, Event.from_pdu, v11, V11)

    def test_error_carries_errcode_and_message(self) -> None:
        error = EventFormatError("M_TOO_LARGE", "too big")
        self.assertEqual((error.errcode, error.msg), ("M_TOO_LARGE", "too big"))
        self.assertIsInstance(error, ValueError)


class IdentifierGrammarTests(TestCase):
    def test_valid_user_ids(self) -> None:
        for user_id in (
            "@alice:example.org",
            "@a:1.2.3.4:8448",
            "@a:[::1]",
            "@a:[2001:db8::1]:443",
            "@Historical User!:example.org",
            "@:example.org",
        ):
            self.assertTrue(is_valid_user_id(user_id), user_id)

    def test_invalid_user_ids(self) -> None:
        for user_id in (
            "alice:example.org",
            "@alice",
            "@alice:",
            "@alice:exa mple.org",
            "@al\x00ice:example.org",
            "@a:" + "b" * 253,
            5,
            None,
        ):
            self.assertFalse(is_valid_user_id(user_id), user_id)

    def test_server_names(self) -> None:
        self.assertTrue(is_valid_server_name("matrix.org:8448"))
        self.assertFalse(is_valid_server_name("matrix.org:"))
        self.assertFalse(is_valid_server_name("matrix.org:123456"))
        self.assertFalse(is_valid_server_name(""))


class UnsignedTests(TestCase):
    def test_non_object_unsigned_is_dropped(self) -> None:
        for unsigned in ("age", [1], None):
            self.assertEqual(Event.from_pdu(dict(message(), unsigned=unsigned), V11).unsigned, {})

    def test_unsigned_that_is_not_json_is_dropped(self) -> None:
        self.assertEqual(Event.from_pdu(dict(message(), unsigned={"x": b"raw"}), V11).unsigned, {})


class ParsedBackExactlyTests(TestCase):
    """An Event's pdu is its canonical JSON parsed back, by orjson only where that is exact."""

    def test_big_integers_of_older_rooms_stay_integers(self) -> None:
        encoded = b'{"content":{"big":1180591620717411303424,"n":-3},"type":"m.x"}'
        parsed = parse_canonical(encoded, KNOWN_ROOM_VERSIONS["5"].strict_canonical_json)
        self.assertEqual(parsed["content"]["big"], 2**70)
        self.assertIsInstance(parsed["content"]["big"], int)

    def test_strict_versions_parse_to_the_same_pdu(self) -> None:
        for version in ALL_VERSIONS:
            event = Event.from_pdu(message(content={"body": "é \U0001f600 \u0001", "n": 2**53 - 1}),
                                   version)
            self.assertEqual(event.pdu, json.loads(event.canonical_bytes))
            self.assertEqual(parse_canonical(event.canonical_bytes.decode(), True), event.pdu)


class KeptFieldsTests(TestCase):
    """What an Event keeps parsed (`fields`): the PDU without hashes and signatures."""

    def test_fields_are_the_pdu_without_hashes_and_signatures(self) -> None:
        event = Event.from_pdu(message(), V11)
        pdu = event.pdu
        self.assertEqual(set(pdu) - set(event.fields), {"hashes", "signatures"})
        self.assertEqual(event.fields, {k: v for k, v in pdu.items()
                                        if k not in ("hashes", "signatures")})

    def test_the_fields_dict_is_sized_for_the_keys_kept(self) -> None:
        # A dict keeps the table it grew to: with hashes and signatures popped from the
        # parsed PDU, a message's fields held a table for 11 keys (632 bytes, not 272).
        for version in ALL_VERSIONS:
            event = Event.from_pdu(message(origin="a.example"), version)
            fresh = {}
            for key, value in event.fields.items():
                fresh[key] = value
            self.assertLessEqual(sys.getsizeof(event.fields), sys.getsizeof(fresh))
