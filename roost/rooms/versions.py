"""Room versions as data.

Every behaviour that differs between the room versions Roost speaks is a named
flag here, so the rest of the room core asks "does this version do X?" instead
of comparing version strings. Versions are not ordered (the spec says so), which
is another reason never to write ``if version >= "11"``.

Roost implements room versions 10, 11 and 12 only. All three share: event ids
that are URL-safe reference hashes (v4+), strict canonical JSON (v6+),
knocking (v7+), restricted joins (v8+), ``join_authorised_via_users_server``
kept on redaction (v9+), integer-only power levels and ``knock_restricted``
(v10+). The flags for those are kept anyway so a reader can see which rules
depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_ROOM_VERSION",
    "KNOWN_ROOM_VERSIONS",
    "RoomVersion",
    "UnsupportedRoomVersionError",
    "get_room_version",
]


@dataclass(frozen=True, slots=True)
class RoomVersion:
    """The properties of one room version that the algorithms depend on."""

    identifier: str
    # v6+: events must be strict canonical JSON (integer range, no floats).
    strict_canonical_json: bool = True
    # v7+: the "knock" membership and join rule.
    knock_join_rule: bool = True
    # v8+: the "restricted" join rule and join_authorised_via_users_server.
    restricted_join_rule: bool = True
    # v10+: the "knock_restricted" join rule.
    knock_restricted: bool = True
    # v10+: power level values must be integers, never strings.
    integer_power_levels: bool = True
    # v11+ (MSC2176/MSC3821/MSC3989): the updated redaction algorithm, content.redacts
    # on m.room.redaction, and the creator being the create event's sender rather
    # than content.creator.
    updated_redaction_rules: bool = False
    # v12 (MSC4291/MSC4289): the room id is "!" + the create event's reference hash,
    # the create event has no room_id and is never listed in auth_events, and the
    # creators (sender + additional_creators) have infinite power.
    hydra: bool = False
    # v12 (MSC4297): state resolution v2.1 (iterative auth checks start from an
    # empty state; the conflicted state subgraph joins the full conflicted set).
    state_res_v2_1: bool = False

    @property
    def creator_is_sender(self) -> bool:
        """v11+ dropped content.creator: the create event's sender is the creator."""
        return self.updated_redaction_rules

    @property
    def create_event_in_auth_events(self) -> bool:
        """Whether other events list the create event in their auth_events."""
        return not self.hydra

    @property
    def additional_creators(self) -> bool:
        """v12 lets content.additional_creators name further creators."""
        return self.hydra


V10 = RoomVersion(identifier="10")
V11 = RoomVersion(identifier="11", updated_redaction_rules=True)
V12 = RoomVersion(
    identifier="12",
    updated_redaction_rules=True,
    hydra=True,
    state_res_v2_1=True,
)

KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {v.identifier: v for v in (V10, V11, V12)}

# The spec says servers SHOULD create new rooms with version 12.
DEFAULT_ROOM_VERSION: RoomVersion = V12


class UnsupportedRoomVersionError(ValueError):
    """A room version this server does not implement.

    Clients get M_UNSUPPORTED_ROOM_VERSION and federation peers
    M_INCOMPATIBLE_ROOM_VERSION for this; the caller picks which.
    """

    def __init__(self, identifier: object) -> None:
        super().__init__(f"unsupported room version: {identifier!r}")
        self.identifier = identifier


def get_room_version(identifier: object) -> RoomVersion:
    """Look up a room version by its identifier, or raise UnsupportedRoomVersionError.

    Takes ``object`` because the identifier usually comes straight out of
    untrusted JSON (``content.room_version``) and may not even be a string.
    """
    if isinstance(identifier, str):
        version = KNOWN_ROOM_VERSIONS.get(identifier)
        if version is not None:
            return version
    raise UnsupportedRoomVersionError(identifier)
