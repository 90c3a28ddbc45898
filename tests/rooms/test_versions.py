"""Room versions as data: versions 1 to 12 and, for each feature, the versions the
spec's room version pages give it (written out here from the spec, not from the table)."""

from twisted.trial.unittest import TestCase

from roost.rooms.versions import (
    DEFAULT_ROOM_VERSION,
    KNOWN_ROOM_VERSIONS,
    RoomVersion,
    UnsupportedRoomVersionError,
    get_room_version,
    room_versions_capability,
)

ALL = {str(n) for n in range(1, 13)}


def from_(first: int) -> set[str]:
    return {str(n) for n in range(first, 13)}


def upto(last: int) -> set[str]:
    return {str(n) for n in range(1, last + 1)}


# feature -> the versions that have it, per rooms/vN.md.
SPEC_FEATURES: dict[str, set[str]] = {
    "event_id_in_pdu": upto(2),            # v1 "Event IDs", v3 removes it
    "reference_pairs": upto(2),            # pdu_v1 vs pdu_v3
    "event_id_urlsafe": from_(4),          # v4 "Event IDs"
    "state_res_v1": {"1"},                 # v2 changes only the state resolution
    "state_res_v2_1": {"12"},
    "redaction_rule_in_auth": upto(2),     # v3 "Handling redactions"
    "aliases_auth_rule": upto(5),          # v6 removes rule 4
    "enforce_key_validity": from_(5),      # v5 "Signing key validity period"
    "strict_canonical_json": from_(6),     # v6 "Canonical JSON"
    "notifications_power_levels": from_(6),
    "redaction_keeps_aliases": upto(5),    # v6 "Redactions"
    "knock_join_rule": from_(7),
    "restricted_join_rule": from_(8),
    "redaction_keeps_join_authorised": from_(9),
    "knock_restricted": from_(10),
    "integer_power_levels": from_(10),
    "updated_redaction_rules": from_(11),
    "creator_is_sender": from_(11),
    "hydra": {"12"},
    "additional_creators": {"12"},
}


class KnownRoomVersionsTests(TestCase):
    def test_versions_1_to_12_are_known(self) -> None:
        self.assertEqual(set(KNOWN_ROOM_VERSIONS), ALL)

    def test_each_version_is_filed_under_its_identifier(self) -> None:
        for identifier, version in KNOWN_ROOM_VERSIONS.items():
            self.assertEqual(version.identifier, identifier)

    def test_default_for_new_rooms_is_12_as_the_spec_recommends(self) -> None:
        self.assertEqual(DEFAULT_ROOM_VERSION.identifier, "12")

    def test_versions_are_frozen(self) -> None:
        version = KNOWN_ROOM_VERSIONS["11"]
        with self.assertRaises(AttributeError):
            version.hydra = True  # type: ignore[misc]

    def test_each_feature_is_in_exactly_the_versions_the_spec_gives_it(self) -> None:
        for feature, expected in SPEC_FEATURES.items():
            have = {i for i, v in KNOWN_ROOM_VERSIONS.items() if getattr(v, feature)}
            self.assertEqual(have, expected, feature)

    def test_state_resolution_algorithm_per_version(self) -> None:
        algorithms = {i: v.state_res for i, v in KNOWN_ROOM_VERSIONS.items()}
        self.assertEqual(algorithms, {"1": "v1", **{i: "v2" for i in from_(2) - {"12"}},
                                      "12": "v2.1"})

    def test_only_v12_leaves_the_create_event_out_of_auth_events(self) -> None:
        for identifier, version in KNOWN_ROOM_VERSIONS.items():
            self.assertEqual(version.create_event_in_auth_events, identifier != "12")


class GetRoomVersionTests(TestCase):
    def test_returns_the_known_version(self) -> None:
        self.assertIs(get_room_version("11"), KNOWN_ROOM_VERSIONS["11"])
        self.assertIsInstance(get_room_version("1"), RoomVersion)

    def test_unknown_identifier_raises_with_the_identifier(self) -> None:
        for identifier in ("0", "13", "01", "org.example.custom", ""):
            with self.assertRaises(UnsupportedRoomVersionError) as caught:
                get_room_version(identifier)
            self.assertEqual(caught.exception.identifier, identifier)

    def test_non_string_identifier_from_json_raises(self) -> None:
        for identifier in (10, None, ["10"], {"v": "10"}):
            self.assertRaises(UnsupportedRoomVersionError, get_room_version, identifier)

    def test_unsupported_version_error_is_a_value_error(self) -> None:
        self.assertIsInstance(UnsupportedRoomVersionError("9"), ValueError)


class CapabilityTests(TestCase):
    def test_m_room_versions_lists_1_to_12_as_stable_with_the_default(self) -> None:
        capability = room_versions_capability("10")
        self.assertEqual(capability["default"], "10")
        self.assertEqual(capability["available"], {str(n): "stable" for n in range(1, 13)})
