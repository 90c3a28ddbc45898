"""GET/PUT/DELETE /pushrules/... over raw HTTP: defaults, user rules, ordering, enabled,
actions, m.push_rules account data, and bad input refused with nothing changed."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from tests.client_api.test_rooms_http import Client, assert_error, start_users
from tests.server_harness import q

RULES = "/pushrules/global"


def ids(ruleset: dict[str, Any], kind: str) -> list[str]:
    return [r["rule_id"] for r in ruleset[kind]]


async def ruleset(client: Client) -> dict[str, Any]:
    return (await client.ok("GET", "/pushrules/"))["global"]


async def put(client: Client, kind: str, rule_id: str, body: Any, query: str = "") -> Any:
    return await client.call("PUT", f"{RULES}/{kind}/{q(rule_id)}{query}", body)


class DefaultsTests(TestCase):
    async def test_a_new_user_has_the_specs_default_rules(self) -> None:
        (alice,) = await start_users(self, "alice")
        rules = await ruleset(alice)
        self.assertEqual(set(rules), {"override", "content", "room", "sender", "underride"})
        self.assertIn(".m.rule.is_user_mention", ids(rules, "override"))
        self.assertIn(".m.rule.is_room_mention", ids(rules, "override"))
        self.assertIn(".m.rule.reaction", ids(rules, "override"))
        self.assertEqual(ids(rules, "override")[0], ".m.rule.master")
        mention = next(r for r in rules["override"] if r["rule_id"] == ".m.rule.is_user_mention")
        self.assertEqual(mention["conditions"][0]["value"], alice.user_id)
        self.assertTrue(all(r["default"] for k in rules for r in rules[k]))
        self.assertEqual(await alice.ok("GET", f"{RULES}/"), rules)
        for path in (f"{RULES}/underride/.m.rule.message",):
            got = await alice.ok("GET", path)
            self.assertEqual((got["rule_id"], got["enabled"], got["actions"]),
                             (".m.rule.message", True, ["notify"]))

    async def test_defaults_can_be_disabled_and_given_actions_but_not_replaced(self) -> None:
        (alice,) = await start_users(self, "alice")
        base = f"{RULES}/override/.m.rule.master"
        self.assertEqual(await alice.ok("GET", f"{base}/enabled"), {"enabled": False})
        await alice.ok("PUT", f"{base}/enabled", {"enabled": True})
        self.assertEqual(await alice.ok("GET", f"{base}/enabled"), {"enabled": True})
        msg = f"{RULES}/underride/.m.rule.message"
        await alice.ok("PUT", f"{msg}/actions", {"actions": ["notify", {"set_tweak": "sound",
                                                                          "value": "bing"}]})
        self.assertEqual((await alice.ok("GET", f"{msg}/actions"))["actions"][1]["value"], "bing")
        assert_error(self, await put(alice, "override", ".m.rule.master", {"actions": []}),
                     400, "M_INVALID_PARAM")
        assert_error(self, await alice.call("DELETE", msg), 400, "M_INVALID_PARAM")


class UserRuleTests(TestCase):
    async def test_put_get_delete_a_rule_of_each_kind(self) -> None:
        (alice,) = await start_users(self, "alice")
        bodies = {
            "override": {"conditions": [{"kind": "event_match", "key": "content.body",
                                         "pattern": "beer"},
                                        {"kind": "room_member_count", "is": "<=10"}],
                         "actions": ["notify"]},
            "underride": {"conditions": [], "actions": []},
            "content": {"pattern": "cake*lie", "actions": ["notify"]},
            "room": {"actions": []},
            "sender": {"actions": []},
        }
        names = {"override": "beer", "underride": "quiet", "content": "cake",
                 "room": "!r:test.roost", "sender": "@spam:test.roost"}
        for kind, body in bodies.items():
            resp = await put(alice, kind, names[kind], body)
            self.assertEqual((resp.status, resp.body), (200, {}), kind)
            got = await alice.ok("GET", f"{RULES}/{kind}/{q(names[kind])}")
            self.assertEqual((got["rule_id"], got["default"], got["enabled"]),
                             (names[kind], False, True))
            self.assertEqual(got["actions"], body["actions"])
        rules = await ruleset(alice)
        self.assertEqual(rules["content"][0]["pattern"], "cake*lie")
        self.assertEqual(rules["override"][1]["rule_id"], "beer")  # after master only
        self.assertEqual(rules["underride"][0]["rule_id"], "quiet")  # before the defaults
        for kind, name in names.items():
            resp = await alice.call("DELETE", f"{RULES}/{kind}/{q(name)}")
            self.assertEqual(resp.status, 200, kind)
            assert_error(self, await alice.call("GET", f"{RULES}/{kind}/{q(name)}"),
                         404, "M_NOT_FOUND")
        assert_error(self, await alice.call("DELETE", f"{RULES}/room/{q('!r:test.roost')}"),
                     404, "M_NOT_FOUND")

    async def test_before_and_after_place_the_rule(self) -> None:
        (alice,) = await start_users(self, "alice")
        for name in ("a", "b"):
            await put(alice, "content", name, {"pattern": name, "actions": []})
        self.assertEqual(ids(await ruleset(alice), "content"), ["b", "a"])  # newest first
        await put(alice, "content", "c", {"pattern": "c", "actions": []}, "?after=a")
        self.assertEqual(ids(await ruleset(alice), "content"), ["b", "a", "c"])
        await put(alice, "content", "d", {"pattern": "d", "actions": []}, "?before=a")
        self.assertEqual(ids(await ruleset(alice), "content"), ["b", "d", "a", "c"])
        await put(alice, "content", "b", {"pattern": "b2", "actions": []}, "?after=c")
        rules = await ruleset(alice)
        self.assertEqual(ids(rules, "content"), ["d", "a", "c", "b"])
        self.assertEqual(rules["content"][3]["pattern"], "b2")
        # An update without before/after keeps the rule where it is.
        await put(alice, "content", "a", {"pattern": "a2", "actions": ["notify"]})
        self.assertEqual(ids(await ruleset(alice), "content"), ["d", "a", "c", "b"])

    async def test_enabled_and_actions_of_a_user_rule(self) -> None:
        (alice,) = await start_users(self, "alice")
        await put(alice, "sender", "@bob:test.roost", {"actions": ["notify"]})
        path = f"{RULES}/sender/{q('@bob:test.roost')}"
        await alice.ok("PUT", f"{path}/enabled", {"enabled": False})
        self.assertEqual(await alice.ok("GET", f"{path}/enabled"), {"enabled": False})
        await alice.ok("PUT", f"{path}/actions", {"actions": []})
        self.assertEqual(await alice.ok("GET", f"{path}/actions"), {"actions": []})
        # Replacing the rule keeps it disabled.
        await put(alice, "sender", "@bob:test.roost", {"actions": ["notify"]})
        self.assertEqual(await alice.ok("GET", f"{path}/enabled"), {"enabled": False})

    async def test_rules_are_per_user(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        await put(alice, "content", "mine", {"pattern": "x", "actions": []})
        self.assertEqual(ids(await ruleset(bob), "content"), [])
        assert_error(self, await bob.call("GET", f"{RULES}/content/mine"), 404, "M_NOT_FOUND")

    async def test_a_change_reaches_sync_as_m_push_rules_account_data(self) -> None:
        (alice,) = await start_users(self, "alice")
        first = await alice.ok("GET", "/sync")
        await put(alice, "content", "cake", {"pattern": "cake", "actions": ["notify"]})
        later = await alice.ok("GET", f"/sync?since={first['next_batch']}")
        events = {e["type"]: e["content"] for e in later["account_data"]["events"]}
        self.assertEqual(ids(events["m.push_rules"]["global"], "content"), ["cake"])


class BadInputTests(TestCase):
    async def test_bad_rules_are_refused_and_change_nothing(self) -> None:
        (alice,) = await start_users(self, "alice")
        await put(alice, "content", "keep", {"pattern": "keep", "actions": []})
        before = await ruleset(alice)
        cases: list[tuple[str, str, Any, str, int, str]] = [
            ("content", "x", {"pattern": "x"}, "", 400, "M_MISSING_PARAM"),
            ("content", "x", {"actions": []}, "", 400, "M_MISSING_PARAM"),
            ("content", "x", {"pattern": 5, "actions": []}, "", 400, "M_BAD_JSON"),
            ("content", "x", {"pattern": "x", "actions": "notify"}, "", 400, "M_BAD_JSON"),
            ("content", "x", {"pattern": "x", "actions": ["explode"]}, "", 400, "M_BAD_JSON"),
            ("content", "x", {"pattern": "x", "actions": [{"value": 1}]}, "", 400, "M_BAD_JSON"),
            ("override", "x", {"conditions": {}, "actions": []}, "", 400, "M_BAD_JSON"),
            ("override", "x", {"conditions": [{"key": "type"}], "actions": []}, "", 400,
             "M_BAD_JSON"),
            ("override", "x", {"conditions": [{"kind": "event_match", "key": "type"}],
                               "actions": []}, "", 400, "M_BAD_JSON"),
            ("override", "x", {"conditions": [{"kind": "room_member_count", "is": "lots"}],
                               "actions": []}, "", 400, "M_BAD_JSON"),
            ("override", "x", {"conditions": [{"kind": "room_member_count", "is": "<<2"}],
                               "actions": []}, "", 400, "M_BAD_JSON"),
            ("override", "x", {"conditions": [{"kind": "event_property_is", "key": "a",
                                               "value": {"no": 1}}], "actions": []}, "", 400,
             "M_BAD_JSON"),
            ("override", "x", {"conditions": [{"kind": "event_property_contains",
                                               "key": "a"}], "actions": []}, "", 400,
             "M_BAD_JSON"),
            ("override", "x", {"conditions": [{"kind": "sender_notification_permission"}],
                               "actions": []}, "", 400, "M_BAD_JSON"),
            ("override", ".mine", {"actions": []}, "", 400, "M_INVALID_PARAM"),
            ("override", "a\\b", {"actions": []}, "", 400, "M_INVALID_PARAM"),
            ("sideways", "x", {"actions": []}, "", 400, "M_INVALID_PARAM"),
            ("content", "x", {"pattern": "x", "actions": []}, "?before=nothere", 400, "M_UNKNOWN"),
            ("content", "x", {"pattern": "x", "actions": []}, "?after=.m.rule.master", 400,
             "M_INVALID_PARAM"),
            ("content", "x", [1, 2], "", 400, "M_BAD_JSON"),
        ]
        for kind, rule_id, body, query, status, errcode in cases:
            resp = await put(alice, kind, rule_id, body, query)
            assert_error(self, resp, status, errcode)
        resp = await alice.call("PUT", f"{RULES}/content/x", raw=b"{not json")
        assert_error(self, resp, 400, "M_NOT_JSON")
        resp = await alice.call("PUT", "/pushrules/device/content/x", {"pattern": "x",
                                                                        "actions": []})
        assert_error(self, resp, 400, "M_INVALID_PARAM")
        for path, body in ((f"{RULES}/content/keep/enabled", {"enabled": "yes"}),
                           (f"{RULES}/content/keep/enabled", {}),
                           (f"{RULES}/content/keep/actions", {"actions": [7]}),
                           (f"{RULES}/content/keep/actions", {})):
            resp = await alice.call("PUT", path, body)
            self.assertEqual(resp.status, 400, (path, body, resp.body))
        assert_error(self, await alice.call("PUT", f"{RULES}/content/nope/enabled",
                                            {"enabled": True}), 404, "M_NOT_FOUND")
        assert_error(self, await alice.call("PUT", f"{RULES}/content/nope/actions",
                                            {"actions": []}), 404, "M_NOT_FOUND")
        assert_error(self, await alice.call("GET", f"{RULES}/content/nope"), 404, "M_NOT_FOUND")
        self.assertEqual(await ruleset(alice), before)

    async def test_unknown_condition_kinds_are_kept_and_never_match(self) -> None:
        (alice,) = await start_users(self, "alice")
        body = {"conditions": [{"kind": "org.example.future", "x": 1}], "actions": ["notify"]}
        self.assertEqual((await put(alice, "override", "future", body)).status, 200)
        got = await alice.ok("GET", f"{RULES}/override/future")
        self.assertEqual(got["conditions"], body["conditions"])

    async def test_push_rules_need_a_token(self) -> None:
        (alice,) = await start_users(self, "alice")
        resp = await alice.server.request("GET", "/_matrix/client/v3/pushrules/")
        assert_error(self, resp, 401, "M_MISSING_TOKEN")
