"""Event ids, the event format and redaction across room versions 1 to 12, with
the spec's lists written out per version (rooms/vN "Redactions", "Event IDs")."""

import base64
import copy
from typing import Any

from twisted.trial.unittest import TestCase

from roost.rooms.builder import build_event_pdu, finalize_pdu
from roost.rooms.events import Event, EventFormatError
from roost.rooms.hashing import (
    add_content_hash,
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    sign_event,
)
from roost.rooms.redaction import redact_pdu
from roost.rooms.versions import KNOWN_ROOM_VERSIONS
from tests.rooms.test_hashing import SPEC_KEY

V = KNOWN_ROOM_VERSIONS

# Content keys each version keeps on redaction, per event type (v1-v10 lists).
_PL = {"ban", "events", "events_default", "kick", "redact", "state_default", "users",
       "users_default"}
KEPT_V1 = {"m.room.member": {"membership"}, "m.room.create": {"creator"},
           "m.room.join_rules": {"join_rule"}, "m.room.power_levels": _PL,
           "m.room.aliases": {"aliases"}, "m.room.history_visibility": {"history_visibility"}}
KEPT_V6 = {k: v for k, v in KEPT_V1.items() if k != "m.room.aliases"}
KEPT_V8 = {**KEPT_V6, "m.room.join_rules": {"join_rule", "allow"}}
KEPT_V9 = {**KEPT_V8, "m.room.member": {"membership", "join_authorised_via_users_server"}}
EXPECTED_KEPT = {**{str(n): KEPT_V1 for n in range(1, 6)}, "6": KEPT_V6, "7": KEPT_V6,
                 "8": KEPT_V8, "9": KEPT_V9, "10": KEPT_V9}

EVERYTHING = {
    "m.room.member": {"membership": "join", "join_authorised_via_users_server": "@a:x",
                      "displayname": "A"},
    "m.room.create": {"creator": "@a:x", "room_version": "1", "m.federate": True},
    "m.room.join_rules": {"join_rule": "restricted", "allow": [], "other": 1},
    "m.room.power_levels": {**{k: 1 for k in _PL}, "invite": 1, "notifications": {}},
    "m.room.aliases": {"aliases": ["#a:x"]},
    "m.room.history_visibility": {"history_visibility": "shared", "x": 1},
    "m.room.topic": {"topic": "t"},
}


def pdu_of(event_type: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"type": event_type, "room_id": "!r:x", "sender": "@a:x", "state_key": "",
            "content": content, "depth": 1, "origin_server_ts": 1, "prev_events": [],
            "auth_events": [], "hashes": {"sha256": "x"}, "signatures": {},
            "origin": "x", "membership": "join", "unsigned": {"age": 1}, "event_id": "$e:x"}


class RedactionPerVersionTests(TestCase):
    def test_content_keys_kept_in_v1_to_v10(self) -> None:
        for identifier, kept in EXPECTED_KEPT.items():
            for event_type, content in EVERYTHING.items():
                redacted = redact_pdu(pdu_of(event_type, copy.deepcopy(content)), V[identifier])
                self.assertEqual(set(redacted["content"]), kept.get(event_type, set()) &
                                 set(content), f"v{identifier} {event_type}")

    def test_top_level_keys_v1_to_v10_keep_origin_membership_and_event_id(self) -> None:
        for n in range(1, 11):
            redacted = redact_pdu(pdu_of("m.room.topic", {"topic": "t"}), V[str(n)])
            self.assertIn("origin", redacted)
            self.assertIn("membership", redacted)
            self.assertIn("event_id", redacted)
            self.assertNotIn("unsigned", redacted)


def message(version_id: str) -> dict[str, Any]:
    version = V[version_id]
    pdu = build_event_pdu(version, "!r:a.example", "@u:a.example", "m.room.message",
                          {"body": "hello"}, prev_event_ids=["$p:a.example"],
                          auth_event_ids=["$c:a.example"], depth=3, origin_server_ts=5)
    return {**pdu, "signatures": {}}


class EventIdFormatTests(TestCase):
    def test_v1_v2_ids_are_made_by_the_server_and_travel_in_the_pdu(self) -> None:
        for identifier in ("1", "2"):
            event_id, signed = finalize_pdu(message(identifier), V[identifier], "a.example",
                                            SPEC_KEY)
            self.assertRegex(event_id, r"^\$[A-Za-z0-9_-]+:a\.example$")
            self.assertEqual(signed["event_id"], event_id)
            self.assertEqual(signed["prev_events"], [["$p:a.example", {}]])
            event = Event.from_pdu(signed, V[identifier])
            self.assertEqual(event.event_id, event_id)
            self.assertEqual(event.prev_event_ids, ("$p:a.example",))
            self.assertEqual(event.auth_event_ids, ("$c:a.example",))

    def test_v3_is_standard_base64_and_v4_on_url_safe_of_the_same_hash(self) -> None:
        pdu = add_content_hash({**message("3"), "content": {"body": "a" * 200}})
        for seed in range(40):  # find a hash whose encodings differ
            pdu["depth"] = seed + 1
            reference = compute_reference_hash(pdu, V["3"])
            v3 = compute_event_id(pdu, V["3"])
            if "+" in v3 or "/" in v3:
                break
        std = base64.b64encode(reference).decode().rstrip("=")
        self.assertEqual(v3, "$" + std)
        for identifier in map(str, range(4, 12)):
            self.assertEqual(compute_event_id(pdu, V[identifier]),
                             "$" + std.replace("+", "-").replace("/", "_"), identifier)

    def test_the_format_of_references_is_enforced_per_version(self) -> None:
        plain = add_content_hash(message("3"))
        pairs = add_content_hash({**message("1"), "event_id": "$e:a.example"})
        Event.from_pdu(plain, V["3"])
        Event.from_pdu(pairs, V["1"])
        self.assertRaises(EventFormatError, Event.from_pdu, plain | {"event_id": "$e:a"}, V["1"])
        self.assertRaises(EventFormatError, Event.from_pdu, pairs, V["3"])
        without_id = {k: v for k, v in pairs.items() if k != "event_id"}
        self.assertRaises(EventFormatError, Event.from_pdu, without_id, V["2"])

    def test_floats_are_tolerated_only_before_v6(self) -> None:
        pdu = {**message("5"), "content": {"body": "x", "n": 1.5}}
        pdu["hashes"] = {"sha256": base64.b64encode(compute_content_hash(pdu, strict=False))
                         .decode().rstrip("=")}
        event = Event.from_pdu(pdu, V["5"])
        # The content hash of a v5 event with a float checks (it is not taken as redacted).
        self.assertTrue(check_content_hash(event.pdu, strict=False))
        self.assertFalse(check_content_hash(event.pdu))
        self.assertRaises(EventFormatError, Event.from_pdu, pdu, V["6"])


class SpecSigningVectorsPerVersionTests(TestCase):
    """Appendices "Signing Events": the minimal event's vector holds wherever the
    redaction algorithm keeps ``origin`` (v1-v10)."""

    def test_minimal_event_signature_in_v1_to_v10(self) -> None:
        event = {"room_id": "!x:domain", "sender": "@a:domain", "origin": "domain",
                 "origin_server_ts": 1000000, "signatures": {}, "hashes": {}, "type": "X",
                 "content": {}, "prev_events": [], "auth_events": [], "depth": 3,
                 "unsigned": {"age_ts": 1000000}}
        for n in range(1, 11):
            signed = sign_event(add_content_hash(event), V[str(n)], "domain", SPEC_KEY)
            self.assertEqual(signed["hashes"]["sha256"],
                             "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos")
            self.assertEqual(
                signed["signatures"]["domain"]["ed25519:1"],
                "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg",
                str(n))
