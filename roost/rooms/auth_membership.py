"""Rule 4 of the authorisation rules: m.room.member, one function per membership.

Kept apart from the other rules because membership is most of the spec's
rule list and most of what varies between room versions (knocking, restricted
joins, the first creator's join). Numbers are the v10/v11 ones; ``Check.deny``
renders them as the checked version numbers them (see ``auth_numbering``).
Rule 4.2.1 (the join_authorised_via_users_server's server signed the event)
needs keys, so signature checking enforces it via
``hashing.servers_that_must_sign``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from roost.rooms.auth_state import THIRD_PARTY_INVITE, Check, join_rule_of
from roost.rooms.events import Event
from roost.rooms.hashing import signed_by_any_public_key
from roost.rooms.versions import RoomVersion

__all__ = ["check_member"]


def check_member(check: Check) -> None:
    """Rule 4: m.room.member."""
    event = check.event
    if event.state_key is None or "membership" not in event.content:  # 4.1
        check.deny("4.1", "a member event needs a state_key and content.membership")
    # 4.2.1 is enforced when signatures are checked (hashing.servers_that_must_sign).
    membership = event.content["membership"]
    rule = _MEMBER_RULES.get(membership) if isinstance(membership, str) else None
    if rule is None:  # 4.8
        check.deny("4.8", f"unknown membership {membership!r}")
    rule(check)


def _check_join(check: Check) -> None:
    """Rule 4.3: membership join."""
    event, version = check.event, check.version
    first = _first_creator(check.create, version)
    if event.prev_event_ids == (check.create.event_id,) and event.state_key == first:
        return  # 4.3.1: the creator's first join, straight after the create event
    if event.sender != event.state_key:  # 4.3.2
        check.deny("4.3.2", "one can only join as oneself")
    current = check.membership(event.sender)
    if current == "ban":  # 4.3.3
        check.deny("4.3.3", "the sender is banned")
    join_rule = join_rule_of(check.auth_events)
    if join_rule == "invite" or (join_rule == "knock" and version.knock_join_rule):  # 4.3.4
        if current not in ("invite", "join"):
            check.deny("4.3.4", f"the room is {join_rule} only and the sender was not invited")
    elif _is_restricted(join_rule, version):  # 4.3.5
        if current not in ("invite", "join"):  # 4.3.5.1
            _check_authorising_user(check)  # 4.3.5.2, else 4.3.5.3 allows
    elif join_rule != "public":  # 4.3.6 allows public rooms
        check.deny("4.3.7", f"join rule {join_rule!r} does not admit the sender")


def _first_creator(create: Event, version: RoomVersion) -> str | None:
    """Who rule 4.3.1 lets join first: content.creator (v10), the create sender (v11+)."""
    if version.creator_is_sender:
        return create.sender
    creator = create.content.get("creator")
    return creator if isinstance(creator, str) else None


def _is_restricted(join_rule: str, version: RoomVersion) -> bool:
    return (join_rule == "restricted" and version.restricted_join_rule) or (
        join_rule == "knock_restricted" and version.knock_restricted
    )


def _check_authorising_user(check: Check) -> None:
    """Rule 4.3.5.2: the join_authorised_via_users_server user is joined and may invite."""
    via = check.event.content.get("join_authorised_via_users_server")
    if not isinstance(via, str):
        check.deny("4.3.5.2", "restricted join without join_authorised_via_users_server")
    if check.membership(via) != "join":
        check.deny("4.3.5.2", "the authorising user is not in the room")
    if check.level(via) < check.named("invite", 0):
        check.deny("4.3.5.2", "the authorising user may not invite")


def _check_invite(check: Check) -> None:
    """Rule 4.4: membership invite."""
    event = check.event
    if "third_party_invite" in event.content:  # 4.4.1
        _check_third_party_invite(check)
        return
    if check.membership(event.sender) != "join":  # 4.4.2
        check.deny("4.4.2", "the inviter is not in the room")
    if check.membership(event.state_key) in ("join", "ban"):  # 4.4.3
        check.deny("4.4.3", "the invitee is joined or banned")
    if check.level(event.sender) < check.named("invite", 0):  # 4.4.4 allows, else 4.4.5
        check.deny("4.4.5", "the sender's power level is below the invite level")


def _check_third_party_invite(check: Check) -> None:
    """Rule 4.4.1: an invite that redeems an m.room.third_party_invite."""
    event = check.event
    if check.membership(event.state_key) == "ban":  # 4.4.1.1
        check.deny("4.4.1.1", "the invitee is banned")
    third_party_invite = event.content["third_party_invite"]
    signed = third_party_invite.get("signed") if isinstance(third_party_invite, Mapping) else None
    if not isinstance(signed, Mapping):  # 4.4.1.2
        check.deny("4.4.1.2", "third_party_invite has no signed block")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):  # 4.4.1.3
        check.deny("4.4.1.3", "signed needs mxid and token")
    if mxid != event.state_key:  # 4.4.1.4
        check.deny("4.4.1.4", "signed.mxid is not the invitee")
    invite_event = check.auth_events.get((THIRD_PARTY_INVITE, token))
    if invite_event is None:  # 4.4.1.5
        check.deny("4.4.1.5", "no m.room.third_party_invite for the token")
    if invite_event.sender != event.sender:  # 4.4.1.6
        check.deny("4.4.1.6", "the sender did not make the third party invite")
    if not signed_by_any_public_key(signed, _public_keys(invite_event.content)):  # 4.4.1.7 allows
        check.deny("4.4.1.8", "no signature matches the third party invite's keys")


def _public_keys(content: Mapping[str, Any]) -> list[str]:
    """public_key and every public_keys[].public_key of an m.room.third_party_invite."""
    keys = [content.get("public_key")]
    public_keys = content.get("public_keys")
    if isinstance(public_keys, list):
        keys += [entry.get("public_key") for entry in public_keys if isinstance(entry, Mapping)]
    return [key for key in keys if isinstance(key, str)]


def _check_leave(check: Check) -> None:
    """Rule 4.5: membership leave (leaving, rejecting, kicking, unbanning)."""
    event = check.event
    if event.sender == event.state_key:  # 4.5.1
        leavable = ("invite", "join", "knock") if check.version.knock_join_rule else ("invite", "join")
        if check.membership(event.state_key) not in leavable:
            check.deny("4.5.1", f"one can only leave from {', '.join(leavable)}")
        return
    if check.membership(event.sender) != "join":  # 4.5.2
        check.deny("4.5.2", "the sender is not in the room")
    sender_level = check.level(event.sender)
    if check.membership(event.state_key) == "ban" and sender_level < check.named("ban", 50):
        check.deny("4.5.3", "unbanning needs the ban level")
    if sender_level < check.named("kick", 50) or check.level(event.state_key) >= sender_level:
        check.deny("4.5.5", "the sender may not kick the target")  # else 4.5.4 allows


def _check_ban(check: Check) -> None:
    """Rule 4.6: membership ban."""
    event = check.event
    if check.membership(event.sender) != "join":  # 4.6.1
        check.deny("4.6.1", "the sender is not in the room")
    sender_level = check.level(event.sender)
    if sender_level < check.named("ban", 50) or check.level(event.state_key) >= sender_level:
        check.deny("4.6.3", "the sender may not ban the target")  # else 4.6.2 allows


def _check_knock(check: Check) -> None:
    """Rule 4.7: membership knock."""
    event, version = check.event, check.version
    join_rule = join_rule_of(check.auth_events)
    knockable = (join_rule == "knock" and version.knock_join_rule) or (
        join_rule == "knock_restricted" and version.knock_restricted
    )
    if not knockable:  # 4.7.1
        check.deny("4.7.1", f"join rule {join_rule!r} does not allow knocking")
    if event.sender != event.state_key:  # 4.7.2
        check.deny("4.7.2", "one can only knock as oneself")
    if check.membership(event.sender) in ("ban", "invite", "join"):  # else 4.7.3 allows
        check.deny("4.7.4", "banned, invited or joined users cannot knock")


_MEMBER_RULES: dict[str, Callable[[Check], None]] = {
    "join": _check_join,
    "invite": _check_invite,
    "leave": _check_leave,
    "ban": _check_ban,
    "knock": _check_knock,
}
