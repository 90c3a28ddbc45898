"""Push rule evaluation: pure (no Twisted, no SQL), an event flattened once and then each
user's compiled rules run against it.

Evaluation runs for every local member on every event, so its shape is "flatten
once, evaluate many". The event becomes two dicts keyed by dot-separated
property path (scalars, arrays). A user's rules compile to `CompiledRules`
with the owner's Matrix ID left symbolic, so every user who kept the defaults
shares one compiled object. `evaluate_for_users` then walks each distinct
compiled object once per event: conditions that do not depend on who is
asking (the event's type, msgtype, member count, the sender's power) are
decided once, and only the few that do (a mention of this user, this user's
display name, an invite for this user) are checked per user. For an ordinary
message in a room of users with default rules, the per-user cost is a dict
assignment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from roost.push.rules import USER_ID, RuleSet, rule_conditions, strip_historical

JsonDict = dict[str, Any]
MAX_SAFE_INT = 2**53 - 1
_WORD = "A-Za-z0-9_"
MEMBER_COUNT_RE = re.compile(r"^(==|<=|>=|<|>)?([0-9]+)$")


# -- the event, flattened once -------------------------------------------------------

def _escape(key: str) -> str:
    return key.replace("\\", "\\\\").replace(".", "\\.")


def _is_scalar(value: Any) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    return isinstance(value, int) and -MAX_SAFE_INT <= value <= MAX_SAFE_INT


class FlatEvent:
    """An event's properties by dot-separated path (the spec's escaping: `\\.`, `\\\\`)."""

    __slots__ = ("scalars", "arrays", "sender", "event_id")

    def __init__(self, event: Mapping[str, Any]) -> None:
        self.scalars: dict[str, Any] = {}
        self.arrays: dict[str, list[Any]] = {}
        self.sender = event.get("sender", "")
        self.event_id = event.get("event_id", "")
        for key in ("type", "sender", "state_key", "room_id", "event_id", "content"):
            if key in event:
                value = event[key]
                if type(value) is str:
                    self.scalars[key] = value
                else:
                    self._walk(key, value)

    def _walk(self, path: str, value: Any) -> None:
        kind = type(value)
        if kind is str or kind is bool or value is None:  # most of an event: no call each
            self.scalars[path] = value
        elif kind is dict:
            scalars = self.scalars
            for key, inner in value.items():
                sub = f"{path}.{key}" if "." not in key and "\\" not in key \
                    else f"{path}.{_escape(key)}"
                inner_kind = type(inner)
                if inner_kind is str or inner_kind is bool or inner is None:
                    scalars[sub] = inner
                else:
                    self._walk(sub, inner)
        elif isinstance(value, dict):
            for key, inner in value.items():
                self._walk(f"{path}.{_escape(key)}", inner)
        elif isinstance(value, list):
            self.arrays[path] = [v for v in value if _is_scalar(v)]
        elif _is_scalar(value):
            self.scalars[path] = value


@dataclass(frozen=True)
class RoomContext:
    """What rules need of the room besides the event: joined members, the sender's power."""

    member_count: int
    sender_power: int | float  # a v12 creator's is infinite
    notification_levels: Mapping[str, Any]

    def sender_may_notify(self, key: str) -> bool:
        required = self.notification_levels.get(key, 50)
        if not isinstance(required, int) or isinstance(required, bool):
            required = 50
        return self.sender_power >= required


def room_context(member_count: int, sender: str, power_levels: Mapping[str, Any] | None,
                 creators: Iterable[str] = ()) -> RoomContext:
    """The context from the room's power levels content (None: no power levels event, where
    the creator has 100 and everyone else 0). Creators of v12 rooms have infinite power."""
    if sender in creators:
        return RoomContext(member_count, MAX_SAFE_INT, (power_levels or {}).get("notifications") or {})
    if power_levels is None:
        return RoomContext(member_count, 0, {})
    users = power_levels.get("users") or {}
    power = users.get(sender, power_levels.get("users_default", 0))
    if not isinstance(power, int) or isinstance(power, bool):
        power = 0
    notifications = power_levels.get("notifications")
    return RoomContext(member_count, power,
                       notifications if isinstance(notifications, dict) else {})


def thread_of(content: Mapping[str, Any]) -> str | None:
    """The thread root an event names directly (`m.thread` relation), else None."""
    relates = content.get("m.relates_to")
    if isinstance(relates, dict) and relates.get("rel_type") == "m.thread":
        root = relates.get("event_id")
        return root if isinstance(root, str) else None
    return None


def related_event(content: Mapping[str, Any]) -> str | None:
    """The event another relation (edit, reaction, reference) points at, to follow to a thread."""
    relates = content.get("m.relates_to")
    if isinstance(relates, dict) and isinstance(relates.get("event_id"), str):
        return str(relates["event_id"])
    return None


# -- conditions, compiled -------------------------------------------------------------

@lru_cache(maxsize=4096)
def glob_regex(pattern: str, words: bool) -> re.Pattern[str]:
    """A glob (`*`, `?`) as a case-insensitive regex: the whole value, or (for content.body)
    any run starting and ending at a word boundary."""
    body = "".join(".*?" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    if words:
        return re.compile(f"(?<![{_WORD}]){body}(?![{_WORD}])", re.IGNORECASE | re.DOTALL)
    return re.compile(f"^{body}$", re.IGNORECASE | re.DOTALL)


def _typed_equal(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


class Condition:
    """One condition. `dynamic` ones depend on the user; the rest are decided once per event."""

    __slots__ = ("kind", "key", "arg", "dynamic", "memo_key")

    def __init__(self, kind: str, key: str, arg: Any, dynamic: bool) -> None:
        self.kind, self.key, self.arg, self.dynamic = kind, key, arg, dynamic
        self.memo_key = (kind, key, repr(arg))

    def static(self, event: FlatEvent, room: RoomContext) -> bool:
        kind, key, arg = self.kind, self.key, self.arg
        if kind == "event_match":
            value = event.scalars.get(key)
            if not isinstance(value, str):
                return False
            if key == "content.body":
                return glob_regex(arg, True).search(value) is not None
            if "*" not in arg and "?" not in arg:
                return value.lower() == arg.lower()
            return glob_regex(arg, False).match(value) is not None
        if kind == "event_property_is":
            return key in event.scalars and _typed_equal(event.scalars[key], arg)
        if kind == "event_property_contains":
            return any(_typed_equal(v, arg) for v in event.arrays.get(key, ()))
        if kind == "room_member_count":
            op, number = arg
            count = room.member_count
            return {"==": count == number, "<": count < number, ">": count > number,
                    "<=": count <= number, ">=": count >= number}[op]
        if kind == "sender_notification_permission":
            return room.sender_may_notify(key)
        return False  # unrecognised: never matches

    def holds_for(self, event: FlatEvent, user_id: str, display_name: str | None) -> bool:
        """A dynamic condition for one user."""
        if self.kind == "contains_display_name":
            body = event.scalars.get("content.body")
            if not display_name or not isinstance(body, str):
                return False
            if display_name.lower() not in body.lower():
                return False  # the cheap test first; the regex only when it may match
            return _literal_words(display_name).search(body) is not None
        if self.kind == "event_match":
            value = event.scalars.get(self.key)
            return isinstance(value, str) and value == user_id
        if self.kind == "event_property_contains":
            return user_id in event.arrays.get(self.key, ())
        if self.kind == "event_property_is":
            return event.scalars.get(self.key) == user_id
        return False

    def candidates(self, event: FlatEvent) -> set[str] | None:
        """The only user ids this condition can hold for (it compares a property with the
        owner's id), or None when it must be asked per user (a display name)."""
        if self.kind == "event_property_contains":
            return {v for v in event.arrays.get(self.key, ()) if isinstance(v, str)}
        if self.kind in ("event_match", "event_property_is"):
            value = event.scalars.get(self.key)
            return {value} if isinstance(value, str) else set()
        return None

    def possible(self, event: FlatEvent) -> bool:
        """False if a dynamic condition can hold for nobody (its property is absent)."""
        if self.kind == "contains_display_name":
            return isinstance(event.scalars.get("content.body"), str)
        if self.kind == "event_property_contains":
            return bool(event.arrays.get(self.key))
        return isinstance(event.scalars.get(self.key), str)


@lru_cache(maxsize=4096)
def _literal_words(text: str) -> re.Pattern[str]:
    """A display name (taken literally, `*` and `?` too) between word boundaries."""
    return re.compile(f"(?<![{_WORD}]){re.escape(text)}(?![{_WORD}])", re.IGNORECASE)


def compile_condition(raw: Any) -> Condition:
    """A condition as stored; anything malformed or unknown compiles to one that never holds."""
    never = Condition("unknown", "", None, False)
    if not isinstance(raw, dict):
        return never
    kind = raw.get("kind")
    key = raw.get("key")
    if kind == "event_match":
        pattern = raw.get("pattern")
        if not isinstance(key, str) or not isinstance(pattern, str):
            return never
        if pattern == USER_ID:
            return Condition(kind, key, None, True)
        return Condition(kind, key, pattern, False)
    if kind in ("event_property_is", "event_property_contains"):
        if not isinstance(key, str) or "value" not in raw or not _is_scalar(raw["value"]):
            return never
        if raw["value"] == USER_ID:
            return Condition(kind, key, None, True)
        return Condition(kind, key, raw["value"], False)
    if kind == "room_member_count":
        match = MEMBER_COUNT_RE.match(str(raw.get("is", ""))) if isinstance(
            raw.get("is"), str) else None
        if match is None:
            return never
        return Condition(kind, "", (match.group(1) or "==", int(match.group(2))), False)
    if kind == "sender_notification_permission":
        return Condition(kind, key, None, False) if isinstance(key, str) else never
    if kind == "contains_display_name":
        return Condition(kind, "", None, True)
    return never


@dataclass(frozen=True)
class Outcome:
    """What a matching rule does: its actions (historical ones stripped), and their gist."""

    rule_id: str
    actions: tuple[Any, ...]
    notify: bool
    highlight: bool
    actions_json: str  # encoded once per compiled rule, not once per user and event


def outcome(rule_id: str, actions: list[Any]) -> Outcome:
    actions = strip_historical(actions)
    highlight = False
    for action in actions:
        if isinstance(action, dict) and action.get("set_tweak") == "highlight":
            highlight = action.get("value", True) is True
    return Outcome(rule_id, tuple(actions), "notify" in actions, highlight,
                   json.dumps(actions, separators=(",", ":")))


@dataclass(frozen=True)
class CompiledRule:
    static: tuple[Condition, ...]
    dynamic: tuple[Condition, ...]
    outcome: Outcome


class CompiledRules:
    """A user's enabled rules in evaluation order, the owner's id left symbolic."""

    __slots__ = ("rules",)

    def __init__(self, rules: list[CompiledRule]) -> None:
        self.rules = rules


def compile_rules(ruleset: RuleSet) -> CompiledRules:
    compiled = []
    for kind, rule in ruleset.ordered(USER_ID):
        if not rule.get("enabled", True):
            continue
        conditions = [compile_condition(c) for c in rule_conditions(kind, rule)]
        compiled.append(CompiledRule(
            tuple(c for c in conditions if not c.dynamic),
            tuple(c for c in conditions if c.dynamic),
            outcome(rule["rule_id"], rule.get("actions") or [])))
    return CompiledRules(compiled)


# -- evaluation -------------------------------------------------------------------------

Group = tuple["CompiledRules", list[str]]


def group_users(users: Mapping[str, CompiledRules]) -> list[Group]:
    """Users by compiled rules object (all who kept the defaults in one group); a room's
    grouping is kept and reused for every event until its members or their rules change."""
    groups: dict[int, Group] = {}
    for user_id, rules in users.items():
        group = groups.get(id(rules))
        if group is None:
            group = groups[id(rules)] = (rules, [])
        group[1].append(user_id)
    return list(groups.values())


def evaluate_groups(event: FlatEvent, room: RoomContext, groups: list[Group],
                    display_names: Mapping[str, str | None]) -> list[tuple[Outcome, list[str]]]:
    """(outcome, users) for every outcome some user got; the sender is never among them (the
    spec: no notification for one's own event). For a group whose answer does not depend on
    the user, the whole group gets it at once."""
    memo: dict[tuple[Any, ...], bool] = {}
    sender = event.sender
    out: list[tuple[Outcome, list[str]]] = []
    for rules, users in groups:
        residual, fallback = _plan(rules, event, room, memo)
        if not residual:
            if fallback is not None:
                members = [u for u in users if u != sender] if sender in users else users
                if members:
                    out.append((fallback, members))
            continue
        out.extend(_per_user(residual, fallback, event, users, display_names))
    return out


def _per_user(residual: list[CompiledRule], fallback: Outcome | None, event: FlatEvent,
              users: list[str], display_names: Mapping[str, str | None]
              ) -> list[tuple[Outcome, list[str]]]:
    """Outcomes where some rules depend on the user. When they only compare a property with
    the user's id (a mention, an invite), the users they can match are read off the event
    and only those are looked at; everyone else gets the fallback in one list."""
    sender = event.sender
    by_outcome: dict[int, tuple[Outcome, list[str]]] = {}

    def give(found: Outcome, user_id: str) -> None:
        entry = by_outcome.get(id(found))
        if entry is None:
            entry = by_outcome[id(found)] = (found, [])
        entry[1].append(user_id)

    candidate_sets = []
    for rule in residual:
        sets = [c.candidates(event) for c in rule.dynamic]
        if any(found is None for found in sets):
            candidate_sets = None
            break
        candidate_sets.append(set.intersection(*sets))  # type: ignore[arg-type]
    if candidate_sets is not None:
        member_set = set(users)
        taken: set[str] = {sender}
        for rule, matching in zip(residual, candidate_sets, strict=True):
            for user_id in sorted((matching & member_set) - taken):
                give(rule.outcome, user_id)
                taken.add(user_id)
        if fallback is not None:
            rest = [u for u in users if u not in taken]
            if rest:
                by_outcome.setdefault(id(fallback), (fallback, []))[1].extend(rest)
        return list(by_outcome.values())
    for user_id in users:
        if user_id == sender:
            continue
        found = fallback
        name = display_names.get(user_id)
        for rule in residual:
            if all(c.holds_for(event, user_id, name) for c in rule.dynamic):
                found = rule.outcome
                break
        if found is not None:
            give(found, user_id)
    return list(by_outcome.values())


def evaluate_for_users(
    event: FlatEvent, room: RoomContext, users: Mapping[str, CompiledRules],
    display_names: Mapping[str, str | None],
) -> dict[str, Outcome]:
    """user -> the outcome of their first matching rule, for the users some rule matched."""
    results: dict[str, Outcome] = {}
    for found, members in evaluate_groups(event, room, group_users(users), display_names):
        for user_id in members:
            results[user_id] = found
    return results


def _plan(rules: CompiledRules, event: FlatEvent, room: RoomContext,
          memo: dict[tuple[Any, ...], bool]) -> tuple[list[CompiledRule], Outcome | None]:
    """The rules left to check per user (their user-independent part holds), and the outcome
    for users none of those match (the first rule that holds for everyone, if any)."""
    residual: list[CompiledRule] = []
    for rule in rules.rules:
        ok = True
        for condition in rule.static:
            held = memo.get(condition.memo_key)
            if held is None:
                held = memo[condition.memo_key] = condition.static(event, room)
            if not held:
                ok = False
                break
        if not ok:
            continue
        if not rule.dynamic:
            return residual, rule.outcome
        if all(c.possible(event) for c in rule.dynamic):
            residual.append(rule)
    return residual, None


def evaluate(event: FlatEvent, room: RoomContext, rules: CompiledRules, user_id: str,
             display_name: str | None = None) -> Outcome | None:
    """One user's outcome (tests and single lookups)."""
    return evaluate_for_users(event, room, {user_id: rules}, {user_id: display_name}).get(user_id)
