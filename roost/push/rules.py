"""The spec's server-default push rules as data, and a user's rule set as the client sees it.

The defaults are those of the current spec (v1.17: the legacy body-mention rules
`.m.rule.contains_display_name`, `.m.rule.contains_user_name` and
`.m.rule.roomnotif` were removed). `USER_ID` in a default is replaced with the
owner's Matrix ID when the rules are listed or compiled.

A user's own state is kept apart from the defaults: their user-defined rules
(per kind, in priority order) and, for default rules, only what they changed
(`enabled`, `actions`). `RuleSet` merges the two into the order evaluation and
`GET /pushrules/` use: override (with `.m.rule.master` first), content, room,
sender, underride, user rules before the defaults of their kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

JsonDict = dict[str, Any]

KINDS = ("override", "content", "room", "sender", "underride")
USER_ID = "[the user's Matrix ID]"

_SOUND_DEFAULT = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}


def _match(key: str, pattern: str) -> JsonDict:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _is(key: str, value: Any) -> JsonDict:
    return {"kind": "event_property_is", "key": key, "value": value}


def _rule(rule_id: str, conditions: list[JsonDict], actions: list[Any],
          enabled: bool = True) -> JsonDict:
    return {"rule_id": rule_id, "default": True, "enabled": enabled,
            "conditions": conditions, "actions": actions}


# The master rule always comes first, before even the user's own override rules.
MASTER = _rule(".m.rule.master", [], [], enabled=False)

DEFAULT_OVERRIDE: list[JsonDict] = [
    _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
    _rule(".m.rule.invite_for_me", [_match("type", "m.room.member"),
                                    _match("content.membership", "invite"),
                                    _match("state_key", USER_ID)],
          ["notify", _SOUND_DEFAULT]),
    _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
    _rule(".m.rule.is_user_mention",
          [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids",
            "value": USER_ID}],
          ["notify", _SOUND_DEFAULT, _HIGHLIGHT]),
    _rule(".m.rule.is_room_mention",
          [_is("content.m\\.mentions.room", True),
           {"kind": "sender_notification_permission", "key": "room"}],
          ["notify", _HIGHLIGHT]),
    _rule(".m.rule.tombstone", [_match("type", "m.room.tombstone"), _match("state_key", "")],
          ["notify", _HIGHLIGHT]),
    _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
    _rule(".m.rule.room.server_acl", [_match("type", "m.room.server_acl"),
                                      _match("state_key", "")], []),
    _rule(".m.rule.suppress_edits", [_is("content.m\\.relates_to.rel_type", "m.replace")], []),
]

DEFAULT_UNDERRIDE: list[JsonDict] = [
    _rule(".m.rule.call", [_match("type", "m.call.invite")],
          ["notify", {"set_tweak": "sound", "value": "ring"}]),
    _rule(".m.rule.encrypted_room_one_to_one",
          [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.encrypted")],
          ["notify", _SOUND_DEFAULT]),
    _rule(".m.rule.room_one_to_one",
          [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.message")],
          ["notify", _SOUND_DEFAULT]),
    _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
    _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
]

DEFAULTS_BY_KIND: dict[str, list[JsonDict]] = {
    "override": [MASTER, *DEFAULT_OVERRIDE], "content": [], "room": [], "sender": [],
    "underride": DEFAULT_UNDERRIDE,
}
DEFAULT_IDS: dict[tuple[str, str], JsonDict] = {
    (kind, r["rule_id"]): r for kind, rules in DEFAULTS_BY_KIND.items() for r in rules
}


@dataclass(frozen=True)
class UserRule:
    """A user-defined rule as stored: its kind, id and body, in priority order per kind."""

    kind: str
    rule_id: str
    actions: list[Any]
    enabled: bool = True
    conditions: list[JsonDict] | None = None  # override and underride
    pattern: str | None = None  # content


@dataclass
class RuleSet:
    """One user's push rules: their own, and what they changed of the defaults."""

    user_rules: list[UserRule] = field(default_factory=list)  # per kind, priority order
    # default rule id -> {"enabled": bool, "actions": [...]} (only what was changed)
    default_changes: dict[str, JsonDict] = field(default_factory=dict)

    def ordered(self, user_id: str) -> list[tuple[str, JsonDict]]:
        """(kind, rule as the client sees it) in evaluation order."""
        out: list[tuple[str, JsonDict]] = [("override", self._default(MASTER, user_id))]
        for kind in KINDS:
            out += [(kind, _user_rule_json(r)) for r in self.user_rules if r.kind == kind]
            out += [(kind, self._default(r, user_id)) for r in DEFAULTS_BY_KIND[kind]
                    if r is not MASTER]
        return out

    def as_json(self, user_id: str) -> JsonDict:
        """The body of GET /pushrules/ (its `global` ruleset)."""
        ruleset: JsonDict = {kind: [] for kind in KINDS}
        for kind, rule in self.ordered(user_id):
            ruleset[kind].append(rule)
        return ruleset

    def find(self, user_id: str, kind: str, rule_id: str) -> JsonDict | None:
        for k, rule in self.ordered(user_id):
            if k == kind and rule["rule_id"] == rule_id:
                return rule
        return None

    def _default(self, rule: JsonDict, user_id: str) -> JsonDict:
        out = _fresh_copy(rule)
        for condition in out["conditions"]:
            for name in ("pattern", "value"):
                if condition.get(name) == USER_ID:
                    condition[name] = user_id
        changed = self.default_changes.get(rule["rule_id"], {})
        if "enabled" in changed:
            out["enabled"] = changed["enabled"]
        if "actions" in changed:
            out["actions"] = changed["actions"]
        return out


# id(default rule) -> (the rule, its JSON): see _fresh_copy.
_ENCODED_DEFAULTS: dict[int, tuple[JsonDict, bytes]] = {}


def _fresh_copy(rule: JsonDict) -> JsonDict:
    """A deep copy of a default rule (the caller fills in the user and their changes).
    Decoded from the rule's JSON, encoded once: copy.deepcopy of the ~15 default rules
    cost ~3 ms of every initial sync (bench/big_room.py), decoding ~50 µs. The rules
    are plain JSON (str, int, bool, list, dict), so the copy is the same."""
    kept = _ENCODED_DEFAULTS.get(id(rule))
    if kept is None or kept[0] is not rule:
        kept = _ENCODED_DEFAULTS[id(rule)] = (rule, orjson.dumps(rule))
    out: JsonDict = orjson.loads(kept[1])
    return out


def _user_rule_json(rule: UserRule) -> JsonDict:
    out: JsonDict = {"rule_id": rule.rule_id, "default": False, "enabled": rule.enabled,
                     "actions": rule.actions}
    if rule.kind in ("override", "underride"):
        out["conditions"] = rule.conditions or []
    elif rule.kind == "content":
        out["pattern"] = rule.pattern or ""
    return out


def rule_conditions(kind: str, rule: JsonDict) -> list[JsonDict]:
    """The conditions a rule of any kind stands for (room, sender and content rules have
    theirs implied by their id or pattern)."""
    if kind == "room":
        return [_match("room_id", rule["rule_id"])]
    if kind == "sender":
        return [_match("sender", rule["rule_id"])]
    if kind == "content":
        return [_match("content.body", rule.get("pattern", ""))]
    return list(rule.get("conditions") or [])


def strip_historical(actions: list[Any]) -> list[Any]:
    """Clients and servers must ignore `dont_notify` and `coalesce` (the spec's historical
    actions)."""
    return [a for a in actions if a not in ("dont_notify", "coalesce")]


def ruleset_from_stored(rules: list[Any], default_changes: dict[str, JsonDict]) -> RuleSet:
    """A RuleSet from what storage holds (its StoredRule rows, in priority order per kind)."""
    return RuleSet([UserRule(r.kind, r.rule_id, r.actions, r.enabled, r.conditions, r.pattern)
                    for r in rules], default_changes)
