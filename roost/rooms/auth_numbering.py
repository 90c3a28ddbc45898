"""AuthError and the spec's rule numbers as each room version has them.

The rules are written with their v10/v11 numbers; versions that add or drop a
rule shift the numbers after it. ``deny`` renders a number as the checked
version's spec has it, so an AuthError's reason cites the rule a reader will
find on that version's page.
"""

from __future__ import annotations

from typing import NoReturn

from roost.rooms.versions import RoomVersion

__all__ = ["AuthError", "deny", "deny_as", "rule_number"]


class AuthError(Exception):
    """The event is not allowed by the authorisation rules; ``reason`` says which rule."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def rule_number(version: RoomVersion, number: str) -> str:
    """Translate a v10/v11 rule number into ``version``'s numbering.

    v1-v5 have the m.room.aliases rule at 4 (later rules one higher); before
    v8 there is no 4.2 (join_authorised_via_users_server) nor 4.3.5
    (restricted); before v7 no knock rule; before v10 no 9.1/9.2 (integer
    levels); v12 adds rule 2 and 10.4.
    """
    parts = [int(p) for p in number.split(".")]
    top = parts[0]
    if top == 4 and len(parts) > 1:
        if not version.restricted_join_rule:
            if parts == [4, 3, 7]:
                parts = [4, 3, 6]
            if parts[1] >= 3:
                parts[1] -= 1
            if not version.knock_join_rule and parts[1] == 7:
                parts[1] = 6  # the unknown membership rule follows ban directly
    if top == 9 and len(parts) > 1:
        if not version.integer_power_levels:
            parts[1] = max(parts[1] - 2, 1)
        if version.hydra and parts[1] >= 4:
            parts[1] += 1
    if version.aliases_auth_rule and top >= 4:
        parts[0] = top + 1
    if version.hydra and top >= 2:
        parts[0] = top + 1
    return ".".join(map(str, parts))


def deny(version: RoomVersion, number: str, why: str) -> NoReturn:
    """Reject, citing rule ``number`` (v10/v11 numbering) as ``version`` numbers it."""
    raise AuthError(f"rule {rule_number(version, number)}: {why}")


def deny_as(number: str, why: str) -> NoReturn:
    """Reject citing ``number`` verbatim, for rules that exist in one version only."""
    raise AuthError(f"rule {number}: {why}")
