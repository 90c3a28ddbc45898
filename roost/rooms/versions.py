"""Room versions as data: one table drives everything that differs between them.

Every behaviour that differs between room versions 1 to 12 is a named field
of ``RoomVersion`` and each version is one row of ``_TABLE`` below, so the rest
of the room core asks "does this version do X?" instead of comparing version
strings. Versions are not ordered (the spec says so), which is another reason
never to write ``if version >= "11"``.

What each field means, and the spec page that introduced it:

* ``event_format``: 1 = v1/v2 (the server makes the id, ``$opaque:domain``, and
  puts it in the PDU; ``prev_events``/``auth_events`` are ``[id, hashes]``
  pairs); 2 = v3 (the id is the reference hash in standard unpadded base64);
  3 = v4+ (URL-safe unpadded base64).
* ``state_res``: "v1" (room v1), "v2" (v2-v11), "v2.1" (v12).
* ``redaction_rule_in_auth``: v1/v2 auth rule 11 (the redact level, or the
  event ids' domains) instead of v3's "Handling redactions".
* ``aliases_auth_rule``: v1-v5 auth rule 4 (``m.room.aliases`` state key is the
  sender's domain); gone from v6.
* ``enforce_key_validity``: v5+, keys must be valid at ``origin_server_ts``.
* ``strict_canonical_json``: v6+, no floats, integers within 2**53.
* ``notifications_power_levels``: v6+, rule 9's events checks cover
  ``notifications`` too.
* ``redaction_keeps_aliases``: v1-v5 keep ``m.room.aliases``' ``aliases``.
* ``knock_join_rule`` v7+, ``restricted_join_rule`` v8+ (also ``allow`` kept on
  redaction), ``redaction_keeps_join_authorised`` v9+, ``knock_restricted`` and
  ``integer_power_levels`` v10+, ``updated_redaction_rules`` v11+ (and the
  creator is the create event's sender), ``hydra`` v12.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_ROOM_VERSION",
    "KNOWN_ROOM_VERSIONS",
    "RoomVersion",
    "UnsupportedRoomVersionError",
    "get_room_version",
    "room_versions_capability",
]


@dataclass(frozen=True, slots=True)
class RoomVersion:
    """The properties of one room version that the algorithms depend on."""

    identifier: str
    event_format: int
    state_res: str
    redaction_rule_in_auth: bool
    aliases_auth_rule: bool
    enforce_key_validity: bool
    strict_canonical_json: bool
    notifications_power_levels: bool
    redaction_keeps_aliases: bool
    knock_join_rule: bool
    restricted_join_rule: bool
    redaction_keeps_join_authorised: bool
    knock_restricted: bool
    integer_power_levels: bool
    # v11+ (MSC2176/MSC3821/MSC3989): the updated redaction algorithm, content.redacts
    # on m.room.redaction, and the creator being the create event's sender rather
    # than content.creator.
    updated_redaction_rules: bool
    # v12 (MSC4291/MSC4289): the room id is "!" + the create event's reference hash,
    # the create event has no room_id and is never listed in auth_events, and the
    # creators (sender + additional_creators) have infinite power.
    hydra: bool

    @property
    def event_id_in_pdu(self) -> bool:
        """v1/v2: the event id is made by the sending server and travels in the PDU."""
        return self.event_format == 1

    @property
    def reference_pairs(self) -> bool:
        """v1/v2: prev_events and auth_events are [event_id, {alg: hash}] pairs."""
        return self.event_format == 1

    @property
    def event_id_urlsafe(self) -> bool:
        """v4+: the reference hash is encoded with the URL-safe alphabet."""
        return self.event_format == 3

    @property
    def state_res_v1(self) -> bool:
        return self.state_res == "v1"

    @property
    def state_res_v2_1(self) -> bool:
        """v12 (MSC4297): state resolution v2.1."""
        return self.state_res == "v2.1"

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


# One row per version. Columns, in order: event_format, state_res,
# redaction_rule_in_auth, aliases_auth_rule, enforce_key_validity,
# strict_canonical_json, notifications_power_levels, redaction_keeps_aliases,
# knock_join_rule, restricted_join_rule, redaction_keeps_join_authorised,
# knock_restricted, integer_power_levels, updated_redaction_rules, hydra.
_T, _F = True, False
_TABLE: dict[str, tuple[int, str, bool, bool, bool, bool, bool, bool, bool, bool, bool,
                        bool, bool, bool, bool]] = {
    "1": (1, "v1", _T, _T, _F, _F, _F, _T, _F, _F, _F, _F, _F, _F, _F),
    "2": (1, "v2", _T, _T, _F, _F, _F, _T, _F, _F, _F, _F, _F, _F, _F),
    "3": (2, "v2", _F, _T, _F, _F, _F, _T, _F, _F, _F, _F, _F, _F, _F),
    "4": (3, "v2", _F, _T, _F, _F, _F, _T, _F, _F, _F, _F, _F, _F, _F),
    "5": (3, "v2", _F, _T, _T, _F, _F, _T, _F, _F, _F, _F, _F, _F, _F),
    "6": (3, "v2", _F, _F, _T, _T, _T, _F, _F, _F, _F, _F, _F, _F, _F),
    "7": (3, "v2", _F, _F, _T, _T, _T, _F, _T, _F, _F, _F, _F, _F, _F),
    "8": (3, "v2", _F, _F, _T, _T, _T, _F, _T, _T, _F, _F, _F, _F, _F),
    "9": (3, "v2", _F, _F, _T, _T, _T, _F, _T, _T, _T, _F, _F, _F, _F),
    "10": (3, "v2", _F, _F, _T, _T, _T, _F, _T, _T, _T, _T, _T, _F, _F),
    "11": (3, "v2", _F, _F, _T, _T, _T, _F, _T, _T, _T, _T, _T, _T, _F),
    "12": (3, "v2.1", _F, _F, _T, _T, _T, _F, _T, _T, _T, _T, _T, _T, _T),
}

KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    identifier: RoomVersion(identifier, *row) for identifier, row in _TABLE.items()
}

# The spec says servers SHOULD create new rooms with version 12.
DEFAULT_ROOM_VERSION: RoomVersion = KNOWN_ROOM_VERSIONS["12"]


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


def room_versions_capability(default: str) -> dict[str, object]:
    """The ``m.room_versions`` capability of GET /capabilities: every version in the
    table, all stable, and the configured default for new rooms."""
    return {"default": default,
            "available": {identifier: "stable" for identifier in KNOWN_ROOM_VERSIONS}}
