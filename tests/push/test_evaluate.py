"""Push rule evaluation against the spec's default rules and conditions (pure: dicts in)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from roost.push.evaluate import (
    FlatEvent,
    RoomContext,
    compile_rules,
    evaluate,
    evaluate_for_users,
    room_context,
)
from roost.push.rules import RuleSet, UserRule

ALICE = "@alice:test"
BOB = "@bob:test"
CAROL = "@carol:test"
GROUP = RoomContext(member_count=5, sender_power=0, notification_levels={})
DEFAULTS = compile_rules(RuleSet())


def message(body: str = "hello", sender: str = ALICE, **content: Any) -> FlatEvent:
    return FlatEvent({"type": "m.room.message", "sender": sender, "room_id": "!r:test",
                      "event_id": "$e", "content": {"msgtype": "m.text", "body": body, **content}})


def rule_for(event: FlatEvent, user: str = BOB, room: RoomContext = GROUP,
             rules: Any = DEFAULTS, name: str | None = None) -> str | None:
    found = evaluate(event, room, rules, user, name)
    return found.rule_id if found else None


class DefaultRuleTests(TestCase):
    def test_a_message_in_a_group_notifies_without_highlight(self) -> None:
        found = evaluate(message(), GROUP, DEFAULTS, BOB)
        assert found is not None
        self.assertEqual((found.rule_id, found.notify, found.highlight),
                         (".m.rule.message", True, False))

    def test_a_message_in_a_one_to_one_room_rings_the_default_sound(self) -> None:
        room = RoomContext(2, 0, {})
        found = evaluate(message(), room, DEFAULTS, BOB)
        assert found is not None
        self.assertEqual(found.rule_id, ".m.rule.room_one_to_one")
        self.assertIn({"set_tweak": "sound", "value": "default"}, found.actions)

    def test_the_sender_is_never_notified_of_their_own_event(self) -> None:
        self.assertIsNone(rule_for(message(sender=BOB), BOB))

    def test_a_user_mention_highlights_only_the_mentioned_user(self) -> None:
        event = message("hey", **{"m.mentions": {"user_ids": [BOB]}})
        results = evaluate_for_users(event, GROUP, {BOB: DEFAULTS, CAROL: DEFAULTS}, {})
        self.assertEqual(results[BOB].rule_id, ".m.rule.is_user_mention")
        self.assertTrue(results[BOB].highlight)
        self.assertEqual(results[CAROL].rule_id, ".m.rule.message")
        self.assertFalse(results[CAROL].highlight)

    def test_a_room_mention_needs_the_senders_notification_power(self) -> None:
        event = message("all", **{"m.mentions": {"room": True}})
        self.assertEqual(rule_for(event, room=GROUP), ".m.rule.message")
        powerful = room_context(5, ALICE, {"users": {ALICE: 50}})
        self.assertEqual(rule_for(event, room=powerful), ".m.rule.is_room_mention")
        strict = room_context(5, ALICE, {"users": {ALICE: 50}, "notifications": {"room": 75}})
        self.assertEqual(rule_for(event, room=strict), ".m.rule.message")
        creator = room_context(5, ALICE, {"users": {}}, creators=[ALICE])
        self.assertEqual(rule_for(event, room=creator), ".m.rule.is_room_mention")

    def test_room_mention_true_must_be_the_boolean(self) -> None:
        powerful = room_context(5, ALICE, {"users": {ALICE: 100}})
        event = message("all", **{"m.mentions": {"room": "true"}})
        self.assertEqual(rule_for(event, room=powerful), ".m.rule.message")

    def test_notices_reactions_edits_and_member_events_are_suppressed(self) -> None:
        self.assertEqual(rule_for(message(msgtype="m.notice")), ".m.rule.suppress_notices")
        self.assertFalse(evaluate(message(msgtype="m.notice"), GROUP, DEFAULTS, BOB).notify)  # type: ignore[union-attr]
        reaction = FlatEvent({"type": "m.reaction", "sender": ALICE, "content": {
            "m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "👍"}}})
        self.assertEqual(rule_for(reaction), ".m.rule.reaction")
        edit = message("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}})
        self.assertEqual(rule_for(edit), ".m.rule.suppress_edits")
        join = FlatEvent({"type": "m.room.member", "sender": CAROL, "state_key": CAROL,
                          "content": {"membership": "join"}})
        self.assertEqual(rule_for(join), ".m.rule.member_event")
        acl = FlatEvent({"type": "m.room.server_acl", "sender": ALICE, "state_key": "",
                         "content": {}})
        self.assertEqual(rule_for(acl), ".m.rule.room.server_acl")

    def test_an_invite_notifies_the_invitee_only(self) -> None:
        invite = FlatEvent({"type": "m.room.member", "sender": ALICE, "state_key": BOB,
                            "content": {"membership": "invite"}})
        self.assertEqual(rule_for(invite, BOB), ".m.rule.invite_for_me")
        self.assertEqual(rule_for(invite, CAROL), ".m.rule.member_event")

    def test_tombstone_highlights_calls_ring_encrypted_notifies(self) -> None:
        tomb = FlatEvent({"type": "m.room.tombstone", "sender": ALICE, "state_key": "",
                          "content": {"body": "moved"}})
        self.assertTrue(evaluate(tomb, GROUP, DEFAULTS, BOB).highlight)  # type: ignore[union-attr]
        call = FlatEvent({"type": "m.call.invite", "sender": ALICE, "content": {}})
        self.assertEqual(rule_for(call), ".m.rule.call")
        enc = FlatEvent({"type": "m.room.encrypted", "sender": ALICE, "content": {}})
        self.assertEqual(rule_for(enc), ".m.rule.encrypted")
        self.assertEqual(rule_for(enc, room=RoomContext(2, 0, {})),
                         ".m.rule.encrypted_room_one_to_one")

    def test_other_events_match_nothing(self) -> None:
        topic = FlatEvent({"type": "m.room.topic", "sender": ALICE, "state_key": "",
                           "content": {"topic": "x"}})
        self.assertIsNone(rule_for(topic))

    def test_the_master_rule_enabled_silences_everything(self) -> None:
        rules = compile_rules(RuleSet(default_changes={".m.rule.master": {"enabled": True}}))
        self.assertEqual(rule_for(message(), rules=rules), ".m.rule.master")
        self.assertFalse(evaluate(message(), GROUP, rules, BOB).notify)  # type: ignore[union-attr]

    def test_a_disabled_default_is_skipped(self) -> None:
        rules = compile_rules(RuleSet(default_changes={".m.rule.message": {"enabled": False}}))
        self.assertIsNone(rule_for(message(), rules=rules))


class ConditionTests(TestCase):
    def custom(self, *conditions: Any, kind: str = "override", pattern: str | None = None,
               rule_id: str = "mine") -> Any:
        rule = UserRule(kind, rule_id, ["notify", {"set_tweak": "highlight"}],
                        conditions=list(conditions) if kind in ("override", "underride") else None,
                        pattern=pattern)
        return compile_rules(RuleSet(user_rules=[rule]))

    def test_event_match_globs_are_whole_value_and_case_insensitive(self) -> None:
        rules = self.custom({"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"})

        def topic(value: Any) -> str | None:
            event = FlatEvent({"type": "m.room.topic", "sender": ALICE, "state_key": "",
                               "content": {"topic": value}})
            return rule_for(event, rules=rules)

        self.assertEqual(topic("Lunch plans"), "mine")
        self.assertEqual(topic("LUNCH"), "mine")
        for value in (" lunch", "lunc", None, 5):
            self.assertIsNone(topic(value), value)

    def test_event_match_on_body_matches_at_word_boundaries(self) -> None:
        rules = self.custom({"kind": "event_match", "key": "content.body", "pattern": "ex*ple"})
        for body in ("An example event.", "exple", "An exciting triple-whammy"):
            self.assertEqual(rule_for(message(body), rules=rules), "mine", body)
        for body in ("Anexample", "examples"):
            self.assertEqual(rule_for(message(body), rules=rules), ".m.rule.message", body)

    def test_a_pattern_star_does_not_match_an_absent_property(self) -> None:
        rules = self.custom({"kind": "event_match", "key": "content.nothing", "pattern": "*"})
        self.assertEqual(rule_for(message(), rules=rules), ".m.rule.message")

    def test_event_property_is_is_typed_and_exact(self) -> None:
        rules = self.custom({"kind": "event_property_is", "key": "content.m\\.federate",
                             "value": True})

        def create(value: Any) -> str | None:
            return rule_for(FlatEvent({"type": "m.room.create", "sender": ALICE, "state_key": "",
                                       "content": {"m.federate": value}}), rules=rules)

        self.assertEqual(create(True), "mine")
        for value in ("true", 1, None):
            self.assertIsNone(create(value), value)

    def test_event_property_contains_exact_values_only(self) -> None:
        rules = self.custom({"kind": "event_property_contains", "key": "content.alt_aliases",
                             "value": "#myroom:example.com"})

        def aliases(value: Any) -> str | None:
            return rule_for(FlatEvent({"type": "m.room.canonical_alias", "sender": ALICE,
                                       "state_key": "", "content": {"alt_aliases": value}}),
                            rules=rules)

        self.assertEqual(aliases(["#a:x", "#myroom:example.com"]), "mine")
        self.assertIsNone(aliases([":example.com"]))
        self.assertIsNone(aliases("#myroom:example.com"))

    def test_keys_with_dots_and_backslashes_are_escaped(self) -> None:
        rules = self.custom({"kind": "event_property_is", "key": "content.a\\\\b\\.c", "value": 1})
        event = FlatEvent({"type": "x", "sender": ALICE, "content": {"a\\b.c": 1}})
        self.assertEqual(rule_for(event, rules=rules), "mine")

    def test_room_member_count_operators(self) -> None:
        for expr, count, expected in (("2", 2, True), ("==3", 2, False), ("<3", 2, True),
                                      (">2", 2, False), (">=2", 2, True), ("<=1", 2, False)):
            rules = self.custom({"kind": "room_member_count", "is": expr})
            got = rule_for(message(), rules=rules, room=RoomContext(count, 0, {}))
            self.assertEqual(got == "mine", expected, expr)

    def test_malformed_and_unknown_conditions_never_match(self) -> None:
        for condition in ({"kind": "room_member_count", "is": "lots"},
                          {"kind": "event_match", "key": "type"},
                          {"kind": "org.example.future"}, "nonsense"):
            rules = self.custom(condition)
            self.assertEqual(rule_for(message(), rules=rules), ".m.rule.message", condition)

    def test_contains_display_name_is_per_user_and_literal(self) -> None:
        rules = self.custom({"kind": "contains_display_name"})
        event = message("ping Bob* Smith please")
        results = evaluate_for_users(event, GROUP, {BOB: rules, CAROL: rules},
                                     {BOB: "bob* smith", CAROL: "Car"})
        self.assertEqual(results[BOB].rule_id, "mine")
        self.assertEqual(results[CAROL].rule_id, ".m.rule.message")
        self.assertEqual(rule_for(message("Bobby Smith"), rules=rules, name="Bob"),
                         ".m.rule.message")

    def test_sender_room_and_content_rules(self) -> None:
        sender = self.custom(kind="sender", rule_id=ALICE)
        self.assertEqual(rule_for(message(), rules=sender), ALICE)
        self.assertEqual(rule_for(message(sender=CAROL), rules=sender), ".m.rule.message")
        room = self.custom(kind="room", rule_id="!r:test")
        self.assertEqual(rule_for(message(), rules=room), "!r:test")
        content = self.custom(kind="content", pattern="cake*lie", rule_id="cake")
        self.assertEqual(rule_for(message("the cake is a lie!"), rules=content), "cake")

    def test_override_rules_come_before_the_defaults_and_master_before_them(self) -> None:
        quiet = UserRule("override", "quiet", [], conditions=[
            {"kind": "event_match", "key": "type", "pattern": "m.room.message"}])
        rules = compile_rules(RuleSet(user_rules=[quiet]))
        event = message("hey", **{"m.mentions": {"user_ids": [BOB]}})
        self.assertEqual(rule_for(event, rules=rules), "quiet")
        ruleset = RuleSet(user_rules=[quiet])
        self.assertEqual([r["rule_id"] for _, r in ruleset.ordered(BOB)][:2],
                         [".m.rule.master", "quiet"])

    def test_historical_actions_are_ignored(self) -> None:
        rule = UserRule("override", "old", ["dont_notify"], conditions=[])
        found = evaluate(message(), GROUP, compile_rules(RuleSet(user_rules=[rule])), BOB)
        assert found is not None
        self.assertEqual((found.rule_id, found.actions, found.notify), ("old", (), False))

    def test_users_with_default_rules_share_one_compiled_plan(self) -> None:
        users = {f"@u{i}:test": DEFAULTS for i in range(50)}
        results = evaluate_for_users(message(sender="@u0:test"), GROUP, users, {})
        self.assertEqual(len(results), 49)
        self.assertNotIn("@u0:test", results)
        self.assertEqual({r.rule_id for r in results.values()}, {".m.rule.message"})


class RulesetListingTests(TestCase):
    def test_defaults_name_the_owner_and_hold_every_current_rule(self) -> None:
        ruleset = RuleSet().as_json(BOB)
        ids = {kind: [r["rule_id"] for r in rules] for kind, rules in ruleset.items()}
        self.assertEqual(ids["override"], [
            ".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me",
            ".m.rule.member_event", ".m.rule.is_user_mention", ".m.rule.is_room_mention",
            ".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl",
            ".m.rule.suppress_edits"])
        self.assertEqual(ids["underride"], [
            ".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
            ".m.rule.message", ".m.rule.encrypted"])
        mention = ruleset["override"][4]
        self.assertEqual(mention["conditions"][0]["value"], BOB)
        invite = ruleset["override"][2]
        self.assertEqual(invite["conditions"][2]["pattern"], BOB)


class FlatEventWalkTests(TestCase):
    """FlatEvent tells the plain JSON types apart by exact type (no call per string)."""

    def test_it_flattens_as_the_isinstance_walk_did(self) -> None:
        import random
        from collections import OrderedDict

        from tests.rooms.test_hashing import random_json, random_string

        rng = random.Random(5)
        for _ in range(1000):
            content = {random_string(rng) + rng.choice(["", ".", "\\", "a.b"]): random_json(rng)
                       for _ in range(rng.randrange(6))}
            content["o"] = OrderedDict(k=[1, "x", 2**60, True], n=5, f=1.5)
            event = {"type": "m.room.message", "sender": ALICE, "room_id": "!r:test",
                     "event_id": "$e", "state_key": rng.choice(["", "k"]), "content": content}
            flat = FlatEvent(event)
            scalars, arrays = _reference_flatten(event)
            self.assertEqual((flat.scalars, flat.arrays), (scalars, arrays), content)

    def test_a_message_is_flattened_without_a_call_per_value(self) -> None:
        import sys

        calls: list[str] = []

        def count(frame: Any, what: str, arg: Any) -> None:
            if what == "call":
                calls.append(frame.f_code.co_name)

        event = {"type": "m.room.message", "sender": ALICE, "room_id": "!r:test",
                 "event_id": "$e", "content": {"msgtype": "m.text", "body": "hi", "x": None}}
        sys.setprofile(count)
        try:
            flat = FlatEvent(event)
        finally:
            sys.setprofile(None)
        self.assertEqual(flat.scalars["content.body"], "hi")
        self.assertEqual(calls.count("_walk"), 1)  # the content object; 8 before
        self.assertNotIn("_is_scalar", calls)


def _reference_flatten(event: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """FlatEvent's walk as written before exact types were told apart."""
    from roost.push.evaluate import _escape, _is_scalar

    scalars: dict[str, Any] = {}
    arrays: dict[str, Any] = {}

    def walk(path: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{path}.{_escape(key)}", inner)
        elif isinstance(value, list):
            arrays[path] = [v for v in value if _is_scalar(v)]
        elif _is_scalar(value):
            scalars[path] = value

    for key in ("type", "sender", "state_key", "room_id", "event_id", "content"):
        if key in event:
            walk(key, event[key])
    return scalars, arrays
