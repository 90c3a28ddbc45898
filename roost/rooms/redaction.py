"""The redaction algorithm (spec: room versions, "Redactions").

Redaction is not only what happens when a user deletes a message: event ids,
signatures and the "content hash did not match" path all work on the redacted
form. So this must match every other server byte for byte, and it is written
as two plain tables straight from the spec's lists.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from roost.rooms.versions import RoomVersion

__all__ = ["redact_pdu"]

# Top-level keys kept by the v1-v10 algorithm.
_KEPT_TOP_LEVEL_V10 = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "prev_state",
        "auth_events",
        "origin",
        "origin_server_ts",
        "membership",
    }
)

# v11 stops protecting origin, membership and prev_state.
_KEPT_TOP_LEVEL_V11 = _KEPT_TOP_LEVEL_V10 - {"origin", "membership", "prev_state"}

_POWER_LEVEL_KEYS_V10 = frozenset(
    {
        "ban",
        "events",
        "events_default",
        "kick",
        "redact",
        "state_default",
        "users",
        "users_default",
    }
)



def _kept_content_before_v11(version: RoomVersion) -> dict[str, frozenset[str]]:
    """Content keys kept per event type, v1-v10: v1's list, v6 dropping
    ``m.room.aliases``, v8 adding join rules' ``allow``, v9 the member's
    ``join_authorised_via_users_server``."""
    member = {"membership"}
    if version.redaction_keeps_join_authorised:
        member.add("join_authorised_via_users_server")
    join_rules = {"join_rule"}
    if version.restricted_join_rule:
        join_rules.add("allow")
    kept = {
        "m.room.member": frozenset(member),
        "m.room.create": frozenset({"creator"}),
        "m.room.join_rules": frozenset(join_rules),
        "m.room.power_levels": _POWER_LEVEL_KEYS_V10,
        "m.room.history_visibility": frozenset({"history_visibility"}),
    }
    if version.redaction_keeps_aliases:
        kept["m.room.aliases"] = frozenset({"aliases"})
    return kept


# Filled lazily per version identifier; the table is small and fixed.
_KEPT_CONTENT_OLD: dict[str, dict[str, frozenset[str]]] = {}

# Content keys kept per event type, v11+. m.room.create keeps everything and
# m.room.member's third_party_invite is special-cased below.
_KEPT_CONTENT_V11: dict[str, frozenset[str]] = {
    "m.room.member": frozenset({"membership", "join_authorised_via_users_server"}),
    "m.room.join_rules": frozenset({"join_rule", "allow"}),
    "m.room.power_levels": _POWER_LEVEL_KEYS_V10 | {"invite"},
    "m.room.history_visibility": frozenset({"history_visibility"}),
    "m.room.redaction": frozenset({"redacts"}),
}


def redact_pdu(pdu: Mapping[str, Any], version: RoomVersion) -> dict[str, Any]:
    """Return the redacted form of ``pdu`` under ``version``'s rules.

    The input is not modified; the result shares no mutable state with it, so
    callers may sign or store it freely. ``unsigned`` is always dropped, as it
    is in neither list.
    """
    return _redact(pdu, version, copy.deepcopy)


def redacted_view(pdu: Mapping[str, Any], version: RoomVersion) -> dict[str, Any]:
    """The redacted form sharing its values with ``pdu``: only for reading or encoding.

    Hashing and signing encode the redacted event and throw it away; deep
    copying it first was most of the cost of building an event
    (bench/send_messages.py), so they use this view instead.
    """
    return _redact(pdu, version, _same)


def _same(value: Any) -> Any:
    return value


Clone = Callable[[Any], Any]


def _redact(pdu: Mapping[str, Any], version: RoomVersion, clone: Clone) -> dict[str, Any]:
    kept_top = _KEPT_TOP_LEVEL_V11 if version.updated_redaction_rules else _KEPT_TOP_LEVEL_V10
    if clone is _same:  # the view (every local send signs one): no call per key
        redacted = {key: value for key, value in pdu.items() if key in kept_top}
    else:
        redacted = {key: clone(value) for key, value in pdu.items() if key in kept_top}
    redacted["content"] = _redact_content(pdu.get("type"), pdu.get("content"), version, clone)
    return redacted


def _redact_content(
    event_type: object, content: object, version: RoomVersion, clone: Clone
) -> dict[str, Any]:
    """Strip ``content`` down to the keys its event type keeps."""
    if not isinstance(content, Mapping) or not isinstance(event_type, str):
        return {}
    if version.updated_redaction_rules:
        special = _SPECIAL_CONTENT_V11.get(event_type)
        if special is not None:
            return special(content, clone)
        kept = _KEPT_CONTENT_V11.get(event_type, frozenset())
    else:
        table = _KEPT_CONTENT_OLD.get(version.identifier)
        if table is None:
            table = _KEPT_CONTENT_OLD[version.identifier] = _kept_content_before_v11(version)
        kept = table.get(event_type, frozenset())
    if clone is _same:
        return {key: value for key, value in content.items() if key in kept}
    return {key: clone(value) for key, value in content.items() if key in kept}


def _redact_create_v11(content: Mapping[str, Any], clone: Clone) -> dict[str, Any]:
    """v11+: m.room.create keeps its whole content (MSC2176)."""
    return {key: clone(value) for key, value in content.items()}


def _redact_member_v11(content: Mapping[str, Any], clone: Clone) -> dict[str, Any]:
    """v11+: m.room.member also keeps ``third_party_invite.signed`` (MSC3821).

    The signed block is what the auth rules verify, so a redacted 3pid invite
    must still carry it. Other keys of third_party_invite (display_name) go.
    """
    kept = _KEPT_CONTENT_V11["m.room.member"]
    result = {key: clone(value) for key, value in content.items() if key in kept}
    third_party_invite = content.get("third_party_invite")
    if isinstance(third_party_invite, Mapping):
        result["third_party_invite"] = {
            key: clone(value) for key, value in third_party_invite.items() if key == "signed"
        }
    return result


_SPECIAL_CONTENT_V11: dict[str, Callable[[Mapping[str, Any], Clone], dict[str, Any]]] = {
    "m.room.create": _redact_create_v11,
    "m.room.member": _redact_member_v11,
}
