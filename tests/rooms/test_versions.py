"""Room versions as data: the three versions Roost speaks and their flags."""

from twisted.trial.unittest import TestCase

from roost.rooms.versions import (
    DEFAULT_ROOM_VERSION,
    KNOWN_ROOM_VERSIONS,
    RoomVersion,
    UnsupportedRoomVersionError,
    get_room_version,
)


class KnownRoomVersionsTests(TestCase):
    def test_exactly_versions_10_11_and_12_are_known(self) -> None:
        self.assertEqual(sorted(KNOWN_ROOM_VERSIONS), ["10", "11", "12"])

    def test_each_version_is_filed_under_its_identifier(self) -> None:
        for identifier, version in KNOWN_ROOM_VERSIONS.items():
            self.assertEqual(version.identifier, identifier)

    def test_default_for_new_rooms_is_12_as_the_spec_recommends(self) -> None:
        self.assertEqual(DEFAULT_ROOM_VERSION.identifier, "12")

    def test_versions_are_frozen(self) -> None:
        version = KNOWN_ROOM_VERSIONS["11"]
        with self.assertRaises(AttributeError):
            version.hydra = True  # type: ignore[misc]

    def test_shared_features_hold_in_all_three(self) -> None:
        for version in KNOWN_ROOM_VERSIONS.values():
            self.assertTrue(version.strict_canonical_json)
            self.assertTrue(version.knock_join_rule)
            self.assertTrue(version.restricted_join_rule)
            self.assertTrue(version.knock_restricted)
            self.assertTrue(version.integer_power_levels)


class VersionDifferencesTests(TestCase):
    def test_v10_uses_the_old_redaction_rules_and_content_creator(self) -> None:
        v10 = KNOWN_ROOM_VERSIONS["10"]
        self.assertFalse(v10.updated_redaction_rules)
        self.assertFalse(v10.creator_is_sender)

    def test_v11_and_v12_use_the_updated_redaction_rules(self) -> None:
        for identifier in ("11", "12"):
            version = KNOWN_ROOM_VERSIONS[identifier]
            self.assertTrue(version.updated_redaction_rules)
            self.assertTrue(version.creator_is_sender)

    def test_only_v12_is_hydra_with_state_res_v2_1(self) -> None:
        flags = {
            identifier: (v.hydra, v.state_res_v2_1, v.additional_creators)
            for identifier, v in KNOWN_ROOM_VERSIONS.items()
        }
        self.assertEqual(
            flags,
            {"10": (False, False, False), "11": (False, False, False), "12": (True, True, True)},
        )

    def test_only_v12_leaves_the_create_event_out_of_auth_events(self) -> None:
        self.assertTrue(KNOWN_ROOM_VERSIONS["10"].create_event_in_auth_events)
        self.assertTrue(KNOWN_ROOM_VERSIONS["11"].create_event_in_auth_events)
        self.assertFalse(KNOWN_ROOM_VERSIONS["12"].create_event_in_auth_events)


class GetRoomVersionTests(TestCase):
    def test_returns_the_known_version(self) -> None:
        self.assertIs(get_room_version("11"), KNOWN_ROOM_VERSIONS["11"])
        self.assertIsInstance(get_room_version("12"), RoomVersion)

    def test_unknown_identifier_raises_with_the_identifier(self) -> None:
        for identifier in ("9", "1", "13", "org.example.custom", ""):
            with self.assertRaises(UnsupportedRoomVersionError) as caught:
                get_room_version(identifier)
            self.assertEqual(caught.exception.identifier, identifier)

    def test_non_string_identifier_from_json_raises(self) -> None:
        for identifier in (10, None, ["10"], {"v": "10"}):
            self.assertRaises(UnsupportedRoomVersionError, get_room_version, identifier)

    def test_unsupported_version_error_is_a_value_error(self) -> None:
        self.assertIsInstance(UnsupportedRoomVersionError("9"), ValueError)
