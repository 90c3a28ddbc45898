"""Building local events: layout per version, auth event selection, hashing and signing."""

import copy
import random
from typing import Any

from signedjson.key import generate_signing_key, get_verify_key
from twisted.trial.unittest import TestCase

from roost.rooms import builder as builder_module
from roost.rooms.builder import (
    auth_state_keys,
    build_event_pdu,
    copy_json,
    create_event_content,
    depth_after,
    finalize_pdu,
    room_id_for_create_pdu,
    select_auth_event_ids,
)
from roost.rooms.events import Event
from roost.rooms.hashing import check_content_hash, verify_event_signature
from roost.rooms.versions import KNOWN_ROOM_VERSIONS
from tests.rooms.test_hashing import random_json

V10 = KNOWN_ROOM_VERSIONS["10"]
V11 = KNOWN_ROOM_VERSIONS["11"]
V12 = KNOWN_ROOM_VERSIONS["12"]
ALL_VERSIONS = (V10, V11, V12)
KEY = generate_signing_key("k1")
ALICE = "@alice:a.example"
BOB = "@bob:b.example"


def build(version: Any = V11, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "room_id": "!r:a.example",
        "sender": ALICE,
        "event_type": "m.room.message",
        "content": {"body": "hi"},
        "prev_event_ids": ["$p"],
        "auth_event_ids": ["$a"],
        "depth": 3,
        "origin_server_ts": 1234,
    }
    arguments.update(overrides)
    return build_event_pdu(version, **arguments)


def _containers(value: Any) -> set[int]:
    """The ids of every dict and list inside `value` (itself included)."""
    found: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.add(id(item))
            stack.extend(item.values())
        elif isinstance(item, list):
            found.add(id(item))
            stack.extend(item)
    return found


class BuildEventPduTests(TestCase):
    def test_message_layout(self) -> None:
        self.assertEqual(
            build(),
            {
                "type": "m.room.message",
                "room_id": "!r:a.example",
                "sender": ALICE,
                "content": {"body": "hi"},
                "prev_events": ["$p"],
                "auth_events": ["$a"],
                "depth": 3,
                "origin_server_ts": 1234,
            },
        )

    def test_state_event_gets_its_state_key_even_when_empty(self) -> None:
        self.assertEqual(build(event_type="m.room.topic", state_key="")["state_key"], "")
        self.assertNotIn("state_key", build())

    def test_content_is_copied(self) -> None:
        content = {"nested": {"a": 1}}
        pdu = build(content=content)
        pdu["content"]["nested"]["a"] = 2
        self.assertEqual(content, {"nested": {"a": 1}})

    def test_content_is_copied_without_deepcopy(self) -> None:
        """A JSON copy (builder.copy_json): deepcopy's memo and dispatch were seven calls
        and a dict on every send."""
        def refuse(*_: Any) -> None:
            raise AssertionError("copy.deepcopy ran for JSON content")

        self.patch(builder_module.copy, "deepcopy", refuse)
        content = {"body": "hi", "n": [1, 2.5, None, True, {"deep": ["x"]}]}
        pdu = build(content=content)
        self.assertEqual(pdu["content"], content)
        self.assertIsNot(pdu["content"]["n"][4], content["n"][4])

    def test_copy_json_is_deepcopy_for_json_values(self) -> None:
        rng = random.Random(3)
        for _ in range(500):
            value = random_json(rng)
            copied = copy_json(value)
            self.assertEqual(copied, copy.deepcopy(value))
            self.assertFalse(_containers(copied) & _containers(value), value)

    def test_copy_json_deep_copies_what_is_not_json(self) -> None:
        inner = {1, 2}
        copied = copy_json({"a": [inner]})
        self.assertEqual(copied, {"a": [{1, 2}]})
        self.assertIsNot(copied["a"][0], inner)

    def test_redacts_is_top_level_in_v10(self) -> None:
        pdu = build(V10, event_type="m.room.redaction", content={}, redacts="$t")
        self.assertEqual(pdu["redacts"], "$t")
        self.assertEqual(pdu["content"], {})

    def test_redacts_is_in_content_from_v11(self) -> None:
        for version in (V11, V12):
            pdu = build(
                version, event_type="m.room.redaction", content={"reason": "x"}, redacts="$t"
            )
            self.assertEqual(pdu["content"], {"reason": "x", "redacts": "$t"})
            self.assertNotIn("redacts", pdu)

    def test_redacts_on_other_event_types_is_refused(self) -> None:
        self.assertRaises(ValueError, build, redacts="$t")

    def test_v12_create_event_has_no_room_id(self) -> None:
        pdu = build(V12, room_id=None, event_type="m.room.create", state_key="", content={})
        self.assertNotIn("room_id", pdu)

    def test_room_id_must_be_absent_exactly_for_v12_create(self) -> None:
        self.assertRaises(ValueError, build, V12, event_type="m.room.create", state_key="")
        self.assertRaises(ValueError, build, V12, room_id=None)
        self.assertRaises(ValueError, build, V11, room_id=None, event_type="m.room.create")


class FinalizePduTests(TestCase):
    def test_adds_a_valid_content_hash_and_signature_and_returns_the_event_id(self) -> None:
        for version in ALL_VERSIONS:
            event_id, pdu = finalize_pdu(build(version), version, "a.example", KEY)
            self.assertTrue(check_content_hash(pdu))
            verify_event_signature(pdu, version, "a.example", get_verify_key(KEY))
            self.assertEqual(Event.from_pdu(pdu, version).event_id, event_id)

    def test_drops_unsigned_and_leaves_the_input_alone(self) -> None:
        pdu = dict(build(), unsigned={"age": 1})
        _, finished = finalize_pdu(pdu, V11, "a.example", KEY)
        self.assertNotIn("unsigned", finished)
        self.assertNotIn("hashes", pdu)
        self.assertIn("unsigned", pdu)

    def test_v12_create_room_id_is_the_event_id_with_a_bang(self) -> None:
        content = create_event_content(V12, ALICE)
        pdu = build(V12, room_id=None, event_type="m.room.create", state_key="", content=content)
        event_id, finished = finalize_pdu(pdu, V12, "a.example", KEY)
        room_id = room_id_for_create_pdu(finished, V12)
        self.assertEqual(room_id, "!" + event_id[1:])
        self.assertEqual(Event.from_pdu(finished, V12).room_id, room_id)

    def test_room_id_for_create_pdu_is_only_for_hydra_versions(self) -> None:
        self.assertRaises(ValueError, room_id_for_create_pdu, build(V11), V11)


class SelectAuthEventIdsTests(TestCase):
    STATE = {
        ("m.room.create", ""): "$create",
        ("m.room.power_levels", ""): "$pl",
        ("m.room.join_rules", ""): "$jr",
        ("m.room.member", ALICE): "$alice",
        ("m.room.member", BOB): "$bob",
        ("m.room.member", "@admin:c.example"): "$admin",
        ("m.room.third_party_invite", "tok"): "$tpi",
        ("m.room.topic", ""): "$topic",
    }

    def select(
        self, version: Any, event_type: str, sender: str, state_key: Any, content: Any
    ) -> list[str]:
        return select_auth_event_ids(version, event_type, sender, state_key, content, self.STATE)

    def test_message_selects_create_power_levels_and_sender_before_v12(self) -> None:
        for version in (V10, V11):
            self.assertEqual(
                self.select(version, "m.room.message", ALICE, None, {}),
                ["$create", "$pl", "$alice"],
            )

    def test_v12_never_selects_the_create_event(self) -> None:
        self.assertEqual(self.select(V12, "m.room.message", ALICE, None, {}), ["$pl", "$alice"])

    def test_create_event_selects_nothing(self) -> None:
        self.assertEqual(self.select(V11, "m.room.create", ALICE, "", {}), [])

    def test_join_selects_target_and_join_rules_without_duplicates(self) -> None:
        ids = self.select(V11, "m.room.member", BOB, BOB, {"membership": "join"})
        self.assertEqual(ids, ["$create", "$pl", "$bob", "$jr"])

    def test_restricted_join_also_selects_the_authorising_member(self) -> None:
        content = {"membership": "join", "join_authorised_via_users_server": "@admin:c.example"}
        ids = self.select(V12, "m.room.member", BOB, BOB, content)
        self.assertEqual(ids, ["$pl", "$bob", "$jr", "$admin"])

    def test_third_party_invite_selects_the_invite_event_by_token(self) -> None:
        content = {"membership": "invite", "third_party_invite": {"signed": {"token": "tok"}}}
        ids = self.select(V11, "m.room.member", ALICE, BOB, content)
        self.assertEqual(ids, ["$create", "$pl", "$alice", "$bob", "$jr", "$tpi"])

    def test_leave_and_ban_do_not_select_join_rules(self) -> None:
        for membership in ("leave", "ban"):
            ids = self.select(V11, "m.room.member", ALICE, BOB, {"membership": membership})
            self.assertEqual(ids, ["$create", "$pl", "$alice", "$bob"])

    def test_state_missing_from_the_room_is_skipped(self) -> None:
        ids = select_auth_event_ids(
            V11, "m.room.message", ALICE, None, {}, {("m.room.create", ""): "$c"}
        )
        self.assertEqual(ids, ["$c"])

    def test_auth_state_keys_are_the_keys_of_the_selected_ids(self) -> None:
        """A local build files its auth events under `auth_state_keys` instead of finding
        the selected ids' keys by a walk through the whole state (each key holds its own
        event): both give the same keys, for every kind of event and version."""
        state = dict(self.STATE)
        state.update({("m.room.member", f"@m{i}:b.example"): f"$m{i}" for i in range(50)})
        requests = [
            ("m.room.message", ALICE, None, {}),
            ("m.room.message", "@nobody:a.example", None, {}),
            ("m.room.create", ALICE, "", {}),
            ("m.room.topic", ALICE, "", {"topic": "x"}),
            ("m.room.member", BOB, BOB, {"membership": "join"}),
            ("m.room.member", "@m3:b.example", "@m3:b.example", {
                "membership": "join", "join_authorised_via_users_server": "@admin:c.example"}),
            ("m.room.member", ALICE, BOB, {
                "membership": "invite", "third_party_invite": {"signed": {"token": "tok"}}}),
            ("m.room.member", ALICE, "@m7:b.example", {"membership": "ban"}),
            ("m.room.member", ALICE, "@new:d.example", {"membership": "knock"}),
        ]
        for version in KNOWN_ROOM_VERSIONS.values():
            for event_type, sender, state_key, content in requests:
                ids = select_auth_event_ids(version, event_type, sender, state_key, content, state)
                keys = auth_state_keys(version, event_type, sender, state_key, content, state)
                walked = [key for key, eid in state.items() if eid in set(ids)]
                self.assertEqual(sorted(keys), sorted(walked), (version.identifier, event_type))
                self.assertEqual(list(dict.fromkeys(state[k] for k in keys)), ids)


class DepthAfterTests(TestCase):
    def test_is_one_more_than_the_deepest_prev_event(self) -> None:
        self.assertEqual(depth_after([3, 9, 4]), 10)

    def test_create_event_has_depth_one(self) -> None:
        self.assertEqual(depth_after([]), 1)

    def test_is_capped_at_the_canonical_integer_limit(self) -> None:
        self.assertEqual(depth_after([2**53 - 1]), 2**53 - 1)


class CreateEventContentTests(TestCase):
    def test_v10_names_the_creator(self) -> None:
        self.assertEqual(create_event_content(V10, ALICE), {"room_version": "10", "creator": ALICE})

    def test_v11_and_v12_do_not(self) -> None:
        self.assertEqual(create_event_content(V11, ALICE), {"room_version": "11"})
        self.assertEqual(
            create_event_content(V12, ALICE, extra={"creator": BOB}), {"room_version": "12"}
        )

    def test_v12_takes_additional_creators(self) -> None:
        content = create_event_content(
            V12, ALICE, additional_creators=[BOB], extra={"type": "m.space"}
        )
        self.assertEqual(
            content, {"room_version": "12", "additional_creators": [BOB], "type": "m.space"}
        )

    def test_additional_creators_are_refused_before_v12(self) -> None:
        self.assertRaises(ValueError, create_event_content, V11, ALICE, additional_creators=[BOB])

    def test_extra_cannot_override_the_version(self) -> None:
        self.assertEqual(
            create_event_content(V11, ALICE, extra={"room_version": "1"})["room_version"], "11"
        )
