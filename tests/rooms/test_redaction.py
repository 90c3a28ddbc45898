"""The redaction algorithm, v10 rules and the updated v11+ rules."""

import copy
import sys
from typing import Any

from twisted.trial.unittest import TestCase

from roost.rooms.redaction import redact_pdu, redacted_view
from roost.rooms.versions import KNOWN_ROOM_VERSIONS

V10 = KNOWN_ROOM_VERSIONS["10"]
V11 = KNOWN_ROOM_VERSIONS["11"]
V12 = KNOWN_ROOM_VERSIONS["12"]


def pdu(event_type: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A PDU with every top-level key either rule set might keep or drop."""
    base: dict[str, Any] = {
        "event_id": "$e",
        "type": event_type,
        "room_id": "!r:a.example",
        "sender": "@u:a.example",
        "state_key": "",
        "content": content,
        "hashes": {"sha256": "h"},
        "signatures": {"a.example": {"ed25519:1": "s"}},
        "depth": 5,
        "prev_events": ["$p"],
        "prev_state": [],
        "auth_events": ["$a"],
        "origin": "a.example",
        "origin_server_ts": 1,
        "membership": "join",
        "unsigned": {"age": 5},
        "extra_top_level": "x",
    }
    base.update(extra)
    return base


class TopLevelKeysTests(TestCase):
    def test_v10_keeps_its_list_and_drops_unsigned_and_unknown_keys(self) -> None:
        redacted = redact_pdu(pdu("m.room.message", {"body": "hi"}), V10)
        self.assertEqual(
            sorted(redacted),
            sorted(
                [
                    "event_id", "type", "room_id", "sender", "state_key", "content",
                    "hashes", "signatures", "depth", "prev_events", "prev_state",
                    "auth_events", "origin", "origin_server_ts", "membership",
                ]
            ),
        )  # fmt: skip

    def test_v11_and_v12_no_longer_keep_origin_membership_and_prev_state(self) -> None:
        for version in (V11, V12):
            redacted = redact_pdu(pdu("m.room.message", {"body": "hi"}), version)
            self.assertEqual(
                sorted(redacted),
                sorted(
                    [
                        "event_id", "type", "room_id", "sender", "state_key", "content",
                        "hashes", "signatures", "depth", "prev_events", "auth_events",
                        "origin_server_ts",
                    ]
                ),
            )  # fmt: skip

    def test_v10_redaction_event_loses_its_top_level_redacts(self) -> None:
        redacted = redact_pdu(pdu("m.room.redaction", {}, redacts="$target"), V10)
        self.assertNotIn("redacts", redacted)

    def test_input_is_not_modified_and_output_shares_nothing(self) -> None:
        original = pdu("m.room.power_levels", {"users": {"@u:a.example": 100}})
        snapshot = copy.deepcopy(original)
        redacted = redact_pdu(original, V11)
        redacted["content"]["users"]["@x:a.example"] = 1
        redacted["signatures"]["b.example"] = {}
        self.assertEqual(original, snapshot)

    def test_missing_or_non_object_content_becomes_empty(self) -> None:
        no_content = pdu("m.room.message", {})
        del no_content["content"]
        self.assertEqual(redact_pdu(no_content, V11)["content"], {})
        self.assertEqual(redact_pdu(pdu("m.room.member", "join"), V10)["content"], {})  # type: ignore[arg-type]


# (event type, content, kept content under v10, kept content under v11 and v12)
CONTENT_CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (
        "m.room.message",
        {"body": "secret", "msgtype": "m.text"},
        {},
        {},
    ),
    (
        "m.room.member",
        {
            "membership": "join",
            "displayname": "U",
            "avatar_url": "mxc://a/b",
            "join_authorised_via_users_server": "@admin:a.example",
        },
        {"membership": "join", "join_authorised_via_users_server": "@admin:a.example"},
        {"membership": "join", "join_authorised_via_users_server": "@admin:a.example"},
    ),
    (
        "m.room.member",
        {
            "membership": "invite",
            "third_party_invite": {"display_name": "alice", "signed": {"mxid": "@i:b", "token": "t"}},
        },
        {"membership": "invite"},
        {"membership": "invite", "third_party_invite": {"signed": {"mxid": "@i:b", "token": "t"}}},
    ),
    (
        "m.room.create",
        {"creator": "@u:a.example", "room_version": "10", "m.federate": False, "type": "m.space"},
        {"creator": "@u:a.example"},
        {"creator": "@u:a.example", "room_version": "10", "m.federate": False, "type": "m.space"},
    ),
    (
        "m.room.join_rules",
        {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}], "other": 1},
        {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]},
        {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]},
    ),
    (
        "m.room.power_levels",
        {
            "ban": 50, "events": {"m.room.name": 50}, "events_default": 0, "invite": 0,
            "kick": 50, "redact": 50, "state_default": 50, "users": {"@u:a.example": 100},
            "users_default": 0, "notifications": {"room": 50},
        },
        {
            "ban": 50, "events": {"m.room.name": 50}, "events_default": 0, "kick": 50,
            "redact": 50, "state_default": 50, "users": {"@u:a.example": 100}, "users_default": 0,
        },
        {
            "ban": 50, "events": {"m.room.name": 50}, "events_default": 0, "invite": 0,
            "kick": 50, "redact": 50, "state_default": 50, "users": {"@u:a.example": 100},
            "users_default": 0,
        },
    ),
    (
        "m.room.history_visibility",
        {"history_visibility": "shared", "x": 1},
        {"history_visibility": "shared"},
        {"history_visibility": "shared"},
    ),
    (
        "m.room.redaction",
        {"redacts": "$target", "reason": "spam"},
        {},
        {"redacts": "$target"},
    ),
    (
        "m.room.name",
        {"name": "Secret plans"},
        {},
        {},
    ),
]  # fmt: skip


class ContentKeysTests(TestCase):
    def test_v10_keeps_content_keys_per_event_type(self) -> None:
        for event_type, content, kept_v10, _ in CONTENT_CASES:
            redacted = redact_pdu(pdu(event_type, content), V10)
            self.assertEqual(redacted["content"], kept_v10, event_type)

    def test_v11_and_v12_keep_content_keys_per_updated_rules(self) -> None:
        for version in (V11, V12):
            for event_type, content, _, kept_v11 in CONTENT_CASES:
                redacted = redact_pdu(pdu(event_type, content), version)
                self.assertEqual(redacted["content"], kept_v11, (version.identifier, event_type))

    def test_v11_third_party_invite_without_signed_keeps_an_empty_object(self) -> None:
        content = {"membership": "invite", "third_party_invite": {"display_name": "alice"}}
        redacted = redact_pdu(pdu("m.room.member", content), V11)
        self.assertEqual(redacted["content"], {"membership": "invite", "third_party_invite": {}})

    def test_v11_non_object_third_party_invite_is_dropped(self) -> None:
        content = {"membership": "invite", "third_party_invite": "nonsense"}
        redacted = redact_pdu(pdu("m.room.member", content), V11)
        self.assertEqual(redacted["content"], {"membership": "invite"})

    def test_redacting_twice_changes_nothing_more(self) -> None:
        for version in (V10, V11, V12):
            for event_type, content, _, _ in CONTENT_CASES:
                once = redact_pdu(pdu(event_type, content), version)
                self.assertEqual(redact_pdu(once, version), once)


class RedactedViewTests(TestCase):
    """`redacted_view`: what hashing and signing encode, sharing the event's values."""

    def _events(self) -> list[dict[str, Any]]:
        return [pdu("m.room.message", {"body": "hi", "msgtype": "m.text"}),
                pdu("m.room.member", {"membership": "join", "displayname": "U",
                                      "third_party_invite": {"signed": {"a": 1}, "x": 2}}),
                pdu("m.room.power_levels", {"users": {"@u:a.example": 100}, "ban": 50}),
                pdu("m.room.create", {"creator": "@u:a.example", "m.federate": True}),
                pdu("m.room.redaction", {"redacts": "$t", "reason": "r"}, redacts="$t")]

    def test_it_is_the_redacted_event(self) -> None:
        for version in KNOWN_ROOM_VERSIONS.values():
            for event in self._events():
                self.assertEqual(redacted_view(event, version), redact_pdu(event, version))

    def test_it_shares_the_values_and_calls_nothing_per_key(self) -> None:
        """Every local send signs a view: a clone call per kept key was nine calls a send."""
        event = pdu("m.room.power_levels", {"users": {"@u:a.example": 100}})
        calls: list[str] = []

        def count(frame: Any, what: str, arg: Any) -> None:
            if what == "call":
                calls.append(frame.f_code.co_name)

        sys.setprofile(count)
        try:
            view = redacted_view(event, V11)
        finally:
            sys.setprofile(None)
        self.assertIs(view["content"]["users"], event["content"]["users"])
        self.assertIs(view["prev_events"], event["prev_events"])
        self.assertNotIn("_same", calls)
