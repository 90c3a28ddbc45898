"""Rule 9 of the authorisation rules (v12: 10; v1-v5: 10): m.room.power_levels.

Kept apart because it is the one rule that compares two events (the new power
levels against the current ones) and has a dozen sub-rules whose numbering
differs between versions: before v10 there is no 9.1/9.2 and levels may be
strings that hold integers; v12 inserts 10.4 (no creators in ``users``).
Numbers are the v10/v11 ones; ``deny`` renders them per version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from roost.rooms.auth_numbering import deny, deny_as
from roost.rooms.auth_state import (
    LEVEL_KEYS,
    POWER_LEVELS_KEY,
    Check,
    level_value,
    room_creators,
)
from roost.rooms.events import is_valid_user_id
from roost.rooms.versions import RoomVersion

__all__ = ["check_power_levels"]


def check_power_levels(check: Check, sender_level: int | float) -> None:
    """Rule 9 (v12: 10; v1-v5: 10): m.room.power_levels. Sub-rules from 9.4 are 10.5+ in
    v12; before v10 there is no 9.1/9.2 and levels may be strings that hold integers."""
    version, content = check.version, check.event.content
    _check_power_levels_shape(version, content)  # 9.1 - 9.3
    if version.hydra:  # 10.4 (v12 only)
        if room_creators(check.auth_events, version) & set(content.get("users", {})):
            deny_as("10.4", "creators cannot be given a power level")
    previous = check.auth_events.get(POWER_LEVELS_KEY)
    if previous is None:  # 9.4
        return
    old, new = _Levels.of(previous.content, version), _Levels.of(content, version)
    for name in LEVEL_KEYS:  # 9.5
        _check_level_change(version, name, old.named, new.named, sender_level)
    maps = ("events", "notifications") if version.notifications_power_levels else ("events",)
    for name in maps:  # 9.6, 9.7
        _check_map_changes(version, old.maps[name], new.maps[name], sender_level)
    _check_user_changes(version, check.event.sender, old.maps["users"], new.maps["users"],
                        sender_level)


@dataclass(frozen=True, slots=True)
class _Levels:
    """A power levels content read as integers (stringy levels parsed, others dropped)."""

    named: dict[str, int]
    maps: dict[str, dict[str, int]]

    @classmethod
    def of(cls, content: Mapping[str, Any], version: RoomVersion) -> _Levels:
        named = {name: level for name in LEVEL_KEYS
                 if (level := level_value(content.get(name), version)) is not None}
        maps: dict[str, dict[str, int]] = {}
        for name in ("events", "notifications", "users"):
            raw = content.get(name)
            raw = raw if isinstance(raw, Mapping) else {}
            maps[name] = {key: level for key, value in raw.items()
                          if (level := level_value(value, version)) is not None}
        return cls(named, maps)


def _check_power_levels_shape(version: RoomVersion, content: Mapping[str, Any]) -> None:
    """Rules 9.1-9.3: integer levels, integer maps, users keyed by user id.

    Before v10 only 9.3 exists, with strings holding integers allowed; a level
    that is neither is refused there too, as no server could compare it.
    """
    def is_level(value: object) -> bool:
        return level_value(value, version) is not None

    for name in LEVEL_KEYS:  # 9.1
        if name in content and not is_level(content[name]):
            deny(version, "9.1", f"{name} must be an integer")
    for name in ("events", "notifications"):  # 9.2
        value = content.get(name, {})
        if not isinstance(value, Mapping) or not all(map(is_level, value.values())):
            deny(version, "9.2", f"{name} must map to integers")
    users = content.get("users", {})  # 9.3
    if not isinstance(users, Mapping) or not all(map(is_level, users.values())) \
            or not all(map(is_valid_user_id, users)):
        deny(version, "9.3", "users must map user ids to integers")


def _check_level_change(
    version: RoomVersion, name: str, old: Mapping[str, int], new: Mapping[str, int], limit: float
) -> None:
    """Rule 9.5: an added, changed or removed level must be within reach, old and new."""
    if old.get(name) == new.get(name):
        return
    if name in old and old[name] > limit:  # 9.5.1
        deny(version, "9.5.1", f"the current {name} is above the sender's level")
    if name in new and new[name] > limit:  # 9.5.2
        deny(version, "9.5.2", f"the new {name} is above the sender's level")


def _check_map_changes(
    version: RoomVersion, old: Mapping[str, int], new: Mapping[str, int], limit: float
) -> None:
    """Rules 9.6 and 9.7 for ``events`` or ``notifications``."""
    for key, level in old.items():  # 9.6: changed or removed
        if new.get(key) != level and level > limit:
            deny(version, "9.6.1", f"the current level for {key} is above the sender's")
    for key, level in new.items():  # 9.7: added or changed
        if old.get(key) != level and level > limit:
            deny(version, "9.7.1", f"the new level for {key} is above the sender's")


def _check_user_changes(
    version: RoomVersion, sender: str, old: Mapping[str, int], new: Mapping[str, int],
    limit: float,
) -> None:
    """Rules 9.8 and 9.9 for ``users``."""
    for user, level in old.items():  # 9.8: changed or removed, except one's own
        if user != sender and new.get(user) != level and level >= limit:
            deny(version, "9.8.1", f"{user} is not below the sender's level")
    for user, level in new.items():  # 9.9: added or changed
        if old.get(user) != level and level > limit:
            deny(version, "9.9.1", f"the new level for {user} is above the sender's")
