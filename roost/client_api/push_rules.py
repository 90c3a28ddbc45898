"""GET/PUT/DELETE /pushrules/...: a user's push rules, with `enabled`, `actions`,
`before` and `after`.

Every input is checked before anything is written, so a refused request changes
nothing. After a change the evaluator drops the user's compiled rules and the
whole ruleset goes to the user's clients as `m.push_rules` account data (the
spec's Push Rules: Events).
"""

from __future__ import annotations

from typing import Any

from roost.client_api.errors import MatrixError, bad_json, invalid_param, missing_param, not_found
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.push.evaluate import MAX_SAFE_INT, MEMBER_COUNT_RE
from roost.push.evaluator import PushEvaluator
from roost.push.rules import DEFAULT_IDS, KINDS, RuleSet, ruleset_from_stored
from roost.storage.push import PushRuleStore, StoredRule


class PushRules:
    """A user's ruleset: read, changed, and told to the evaluator and the user's clients."""

    def __init__(self, store: PushRuleStore, evaluator: PushEvaluator | None,
                 account_data: Any) -> None:
        self.store = store
        self._evaluator = evaluator
        self._account_data = account_data

    async def ruleset(self, user_id: str) -> RuleSet:
        stored = (await self.store.rules_for_users([user_id])).get(user_id)
        return ruleset_from_stored(*stored) if stored else RuleSet()

    async def account_data_content(self, user_id: str) -> JsonDict:
        """The content of the user's m.push_rules account data: their whole ruleset."""
        return {"global": (await self.ruleset(user_id)).as_json(user_id)}

    async def changed(self, user_id: str) -> None:
        if self._evaluator is not None:
            self._evaluator.rules_changed(user_id)
        if self._account_data is not None:
            await self._account_data.put_global(user_id, "m.push_rules",
                                                await self.account_data_content(user_id))


# -- validation ------------------------------------------------------------------------

def check_actions(actions: Any) -> list[Any]:
    if not isinstance(actions, list):
        raise bad_json("actions must be a list")
    for action in actions:
        if isinstance(action, str):
            if action not in ("notify", "dont_notify", "coalesce"):
                raise bad_json(f"unknown action: {action}")
        elif isinstance(action, dict):
            if not isinstance(action.get("set_tweak"), str):
                raise bad_json("an action object must name a tweak in set_tweak")
        else:
            raise bad_json("each action must be a string or an object")
    return actions


def _is_scalar(value: Any) -> bool:
    if value is None or isinstance(value, (bool, str)):
        return True
    return isinstance(value, int) and -MAX_SAFE_INT <= value <= MAX_SAFE_INT


def check_condition(condition: Any) -> None:
    if not isinstance(condition, dict) or not isinstance(condition.get("kind"), str):
        raise bad_json("each condition must be an object with a kind")
    kind = condition["kind"]
    if kind in ("event_match", "event_property_is", "event_property_contains",
                "sender_notification_permission") and not isinstance(condition.get("key"), str):
        raise bad_json(f"a {kind} condition needs a key")
    if kind == "event_match" and not isinstance(condition.get("pattern"), str):
        raise bad_json("an event_match condition needs a pattern")
    if kind in ("event_property_is", "event_property_contains") and (
            "value" not in condition or not _is_scalar(condition["value"])):
        raise bad_json(f"a {kind} condition needs a value: a string, integer, boolean or null")
    if kind == "room_member_count":
        expr = condition.get("is")
        if not isinstance(expr, str) or MEMBER_COUNT_RE.match(expr) is None:
            raise bad_json("room_member_count needs `is`: a number, optionally after ==, <, >, <= "
                           "or >=")
    # Other kinds are the spec's "unrecognised conditions": kept, and never matching.


def _kind(req: ApiRequest) -> str:
    if req.params["scope"] != "global":
        raise invalid_param("the only push rule scope is global")
    kind = req.params["kind"]
    if kind not in KINDS:
        raise invalid_param(f"unknown push rule kind: {kind}")
    return kind


def _new_rule(kind: str, rule_id: str, body: JsonDict) -> StoredRule:
    if rule_id.startswith("."):
        raise invalid_param("rule ids starting with '.' are reserved for server-default rules")
    if "/" in rule_id or "\\" in rule_id or not rule_id:
        raise invalid_param("rule ids may not hold '/' or '\\'")
    if "actions" not in body:
        raise missing_param("actions")
    actions = check_actions(body["actions"])
    conditions = None
    pattern = None
    if kind in ("override", "underride"):
        conditions = body.get("conditions", [])
        if not isinstance(conditions, list):
            raise bad_json("conditions must be a list")
        for condition in conditions:
            check_condition(condition)
    elif kind == "content":
        pattern = body.get("pattern")
        if pattern is None:
            raise missing_param("pattern")
        if not isinstance(pattern, str):
            raise bad_json("pattern must be a string")
    return StoredRule(kind, rule_id, conditions, pattern, actions, True)


def register(router: Router, rules: PushRules) -> None:
    async def get_all(req: ApiRequest) -> JsonDict:
        user = req.user.user_id
        return {"global": (await rules.ruleset(user)).as_json(user)}

    async def get_global(req: ApiRequest) -> JsonDict:
        if req.params["scope"] != "global":
            raise invalid_param("the only push rule scope is global")
        user = req.user.user_id
        return (await rules.ruleset(user)).as_json(user)

    async def find(req: ApiRequest) -> tuple[str, JsonDict]:
        kind = _kind(req)
        user = req.user.user_id
        rule = (await rules.ruleset(user)).find(user, kind, req.params["rule_id"])
        if rule is None:
            raise not_found("The push rule was not found.")
        return kind, rule

    async def get_rule(req: ApiRequest) -> JsonDict:
        return (await find(req))[1]

    async def put_rule(req: ApiRequest) -> JsonDict:
        kind = _kind(req)
        rule_id = req.params["rule_id"]
        rule = _new_rule(kind, rule_id, req.json())
        before, after = req.arg("before"), req.arg("after")
        for relative in (before, after):
            if relative is not None and relative.startswith("."):
                raise invalid_param("a rule cannot be placed relative to a server-default rule")
        user = req.user.user_id
        error = await rules.store.put_rule(user, rule, before, after)
        if error is not None:
            raise MatrixError(400, "M_UNKNOWN", error)
        await rules.changed(user)
        return {}

    async def delete_rule(req: ApiRequest) -> JsonDict:
        kind = _kind(req)
        rule_id = req.params["rule_id"]
        if (kind, rule_id) in DEFAULT_IDS:
            raise invalid_param("server-default rules cannot be deleted")
        user = req.user.user_id
        if not await rules.store.delete_rule(user, kind, rule_id):
            raise not_found("The push rule was not found.")
        await rules.changed(user)
        return {}

    async def get_enabled(req: ApiRequest) -> JsonDict:
        return {"enabled": (await find(req))[1]["enabled"]}

    async def get_actions(req: ApiRequest) -> JsonDict:
        return {"actions": (await find(req))[1]["actions"]}

    async def put_attribute(req: ApiRequest, name: str) -> JsonDict:
        kind = _kind(req)
        body = req.json()
        if name not in body:
            raise missing_param(name)
        if name == "enabled":
            if not isinstance(body["enabled"], bool):
                raise bad_json("enabled must be a boolean")
            value: Any = body["enabled"]
        else:
            value = check_actions(body["actions"])
        user = req.user.user_id
        rule_id = req.params["rule_id"]
        if (kind, rule_id) in DEFAULT_IDS:
            await rules.store.change_default(user, rule_id, **{name: value})
        elif name == "enabled":
            if not await rules.store.set_enabled(user, kind, rule_id, value):
                raise not_found("The push rule was not found.")
        elif not await rules.store.set_actions(user, kind, rule_id, value):
            raise not_found("The push rule was not found.")
        await rules.changed(user)
        return {}

    async def put_enabled(req: ApiRequest) -> JsonDict:
        return await put_attribute(req, "enabled")

    async def put_actions(req: ApiRequest) -> JsonDict:
        return await put_attribute(req, "actions")

    base = f"{CLIENT_PREFIX}/pushrules"
    rule = f"{base}/{{scope}}/{{kind}}/{{rule_id}}"
    router.add("GET", f"{base}/", get_all)
    router.add("GET", f"{base}", get_all)
    router.add("GET", f"{base}/{{scope}}/", get_global)
    router.add("GET", rule, get_rule)
    router.add("PUT", rule, put_rule)
    router.add("DELETE", rule, delete_rule)
    router.add("GET", f"{rule}/enabled", get_enabled)
    router.add("PUT", f"{rule}/enabled", put_enabled)
    router.add("GET", f"{rule}/actions", get_actions)
    router.add("PUT", f"{rule}/actions", put_actions)
