"""The auth rules' version-specific steps, table-driven across room versions 1 to 12.

Each case builds the same situation in every version with the real builder and
checks in which versions the spec allows it: aliases (v1-v5 rule 4), redactions
in the auth rules (v1/v2 rule 11), knocking (v7), restricted joins (v8),
knock_restricted (v10), string power levels (until v10), notifications levels
(from v6). The expected version sets are written from the rooms/vN pages.
"""

from collections.abc import Callable

from twisted.trial.unittest import TestCase

from roost.rooms.auth import AuthError, get_power_level, level_value
from roost.rooms.events import Event
from roost.rooms.hashing import servers_that_must_sign
from roost.rooms.versions import KNOWN_ROOM_VERSIONS, RoomVersion
from tests.rooms.test_auth import ALICE, BOB, CAROL, MOD, Room, standard_room

ALL = {str(n) for n in range(1, 13)}


def from_(first: int) -> set[str]:
    return {str(n) for n in range(first, 13)}


def upto(last: int) -> set[str]:
    return {str(n) for n in range(1, last + 1)}


Case = Callable[[RoomVersion], tuple[Room, Event]]


def aliases_of_another_server(version: RoomVersion) -> tuple[Room, Event]:
    room = standard_room(version)
    return room, room.make("m.room.aliases", ALICE, {"aliases": ["#x:b.example"]}, "b.example")


def aliases_of_ones_own_server_by_a_non_member(version: RoomVersion) -> tuple[Room, Event]:
    room = standard_room(version)
    return room, room.make("m.room.aliases", CAROL, {"aliases": ["#x:c.example"]}, "c.example")


def redaction_of_another_servers_event(version: RoomVersion) -> tuple[Room, Event]:
    room = standard_room(version)
    target = room.send("m.room.message", ALICE, {"body": "hi"})
    return room, room.make("m.room.redaction", BOB, _redacts(version, target.event_id),
                           **_top_redacts(version, target.event_id))


def redaction_of_ones_own_servers_event(version: RoomVersion) -> tuple[Room, Event]:
    room = standard_room(version)
    target = room.send("m.room.message", MOD, {"body": "hi"})
    return room, room.make("m.room.redaction", ALICE, _redacts(version, target.event_id),
                           **_top_redacts(version, target.event_id))


def _redacts(version: RoomVersion, event_id: str) -> dict:
    return {"redacts": event_id} if version.updated_redaction_rules else {}


def _top_redacts(version: RoomVersion, event_id: str) -> dict:
    return {} if version.updated_redaction_rules else {"redacts": event_id}


def knock_on_a_knock_room(version: RoomVersion) -> tuple[Room, Event]:
    room = standard_room(version)
    room.join_rule("knock")
    return room, room.member(CAROL, CAROL, "knock")


def knock_on_a_knock_restricted_room(version: RoomVersion) -> tuple[Room, Event]:
    room = standard_room(version)
    room.join_rule("knock_restricted")
    return room, room.member(CAROL, CAROL, "knock")


def invited_join_of_a_knock_room(version: RoomVersion) -> tuple[Room, Event]:
    room = standard_room(version)
    room.join_rule("knock")
    room.force("m.room.member", ALICE, {"membership": "invite"}, CAROL)
    return room, room.member(CAROL, CAROL, "join")


def leave_after_knocking(version: RoomVersion) -> tuple[Room, Event]:
    room = standard_room(version)
    room.set_membership(CAROL, "knock")
    return room, room.member(CAROL, CAROL, "leave")


def restricted_join_authorised_by_a_member(version: RoomVersion) -> tuple[Room, Event]:
    room = standard_room(version)
    room.force("m.room.join_rules", ALICE,
               {"join_rule": "restricted", "allow": [{"type": "m.room_membership",
                                                      "room_id": "!space:a.example"}]}, "")
    return room, room.member(CAROL, CAROL, "join", join_authorised_via_users_server=ALICE)


def knock_restricted_join_authorised_by_a_member(version: RoomVersion) -> tuple[Room, Event]:
    room = standard_room(version)
    room.join_rule("knock_restricted")
    return room, room.member(CAROL, CAROL, "join", join_authorised_via_users_server=ALICE)


def string_power_levels(version: RoomVersion) -> tuple[Room, Event]:
    room = standard_room(version)
    users = {MOD: "50"} if version.hydra else {ALICE: "100", MOD: " +050 "}
    return room, room.make("m.room.power_levels", ALICE, {"users": users, "ban": "50"}, "")


def raising_a_notifications_level_above_ones_own(version: RoomVersion) -> tuple[Room, Event]:
    room = standard_room(version)
    users = {MOD: 50} if version.hydra else {ALICE: 100, MOD: 50}
    room.power_levels(users=users, events={"m.room.power_levels": 50})
    return room, room.make("m.room.power_levels", MOD,
                           {"users": users, "events": {"m.room.power_levels": 50},
                            "notifications": {"room": 100}}, "")


# case -> the versions whose auth rules allow it.
ALLOWED_IN: dict[Case, set[str]] = {
    aliases_of_another_server: from_(6),         # v1-v5 4.2; a plain state event after
    aliases_of_ones_own_server_by_a_non_member: upto(5),  # v1-v5 4.3 allows before rule 5
    redaction_of_another_servers_event: from_(3),  # v1/v2 11: redact level or id domains
    redaction_of_ones_own_servers_event: ALL,
    knock_on_a_knock_room: from_(7),
    knock_on_a_knock_restricted_room: from_(10),
    invited_join_of_a_knock_room: from_(7),
    leave_after_knocking: from_(7),
    restricted_join_authorised_by_a_member: from_(8),
    knock_restricted_join_authorised_by_a_member: from_(10),
    string_power_levels: upto(9),                # v10 9.1/9.3: integers only
    raising_a_notifications_level_above_ones_own: upto(5),  # v6 adds notifications to 9.6/9.7
}


class VersionSpecificAuthRulesTests(TestCase):
    def test_each_case_is_allowed_in_exactly_the_spec_versions(self) -> None:
        for case, allowed_in in ALLOWED_IN.items():
            for identifier, version in KNOWN_ROOM_VERSIONS.items():
                room, event = case(version)
                try:
                    room.check(event)
                    outcome = True
                except AuthError as e:
                    outcome = False
                    reason = e.reason
                self.assertEqual(outcome, identifier in allowed_in,
                                 f"{case.__name__} in v{identifier}"
                                 + ("" if outcome else f": {reason}"))

    def test_denials_cite_the_versions_own_rule_numbers(self) -> None:
        cases = [
            (aliases_of_another_server, "1", "rule 4.2:"),
            (redaction_of_another_servers_event, "2", "rule 11.3:"),
            (string_power_levels, "10", "rule 9.1:"),
            (string_power_levels, "12", "rule 10.1:"),
            (raising_a_notifications_level_above_ones_own, "6", "rule 9.5.1:"),  # no 9.1/9.2 yet
            (knock_on_a_knock_restricted_room, "7", "rule 4.6.1:"),  # v7: knock is 4.6
        ]
        for case, identifier, prefix in cases:
            room, event = case(KNOWN_ROOM_VERSIONS[identifier])
            with self.assertRaises(AuthError) as caught:
                room.check(event)
            self.assertTrue(caught.exception.reason.startswith(prefix),
                            f"{case.__name__} v{identifier}: {caught.exception.reason}")

    def test_v1_creator_join_uses_content_creator(self) -> None:
        for identifier in ("1", "5", "10"):
            room = Room(KNOWN_ROOM_VERSIONS[identifier])
            self.assertEqual(room.create.content["creator"], ALICE)
            room.check(room.member(ALICE, ALICE, "join"))


class StringPowerLevelsTests(TestCase):
    def test_level_values_per_version(self) -> None:
        v1, v6, v9, v10 = (KNOWN_ROOM_VERSIONS[i] for i in ("1", "6", "9", "10"))
        for value, old, strict in (("50", 50, None), (" +050 ", 50, None), ("-7", -7, None),
                                   ("5.0", None, None), ("1e3", None, None), (True, None, None),
                                   (42, 42, 42), (None, None, None)):
            self.assertEqual(level_value(value, v9), old, repr(value))
            self.assertEqual(level_value(value, v10), strict, repr(value))
        # Floats are truncated only where canonical JSON is not enforced (v1-v5).
        self.assertEqual(level_value(50.57, v1), 50)
        self.assertIsNone(level_value(50.57, v6))
        self.assertIsNone(level_value(float("inf"), v1))

    def test_a_string_level_counts_before_v10(self) -> None:
        for identifier, expected in (("9", 50), ("10", 0)):
            room = standard_room(KNOWN_ROOM_VERSIONS[identifier])
            room.power_levels(users={ALICE: 100, BOB: "50"})
            self.assertEqual(get_power_level(BOB, room.state, room.version), expected)


class V1EventIdSignatureTests(TestCase):
    def test_v1_v2_events_need_the_event_id_servers_signature(self) -> None:
        for identifier, extra in (("1", {"z.example"}), ("2", {"z.example"}), ("3", set())):
            version = KNOWN_ROOM_VERSIONS[identifier]
            room = standard_room(version)
            event = room.make("m.room.message", BOB, {"body": "x"})
            pdu = dict(event.pdu, event_id="$abc:z.example")
            self.assertEqual(servers_that_must_sign(pdu, version), {"b.example", *extra})

    def test_restricted_joins_need_the_authorisers_signature_from_v8(self) -> None:
        for identifier in sorted(ALL, key=int):
            version = KNOWN_ROOM_VERSIONS[identifier]
            room = standard_room(version)
            event = room.member(CAROL, CAROL, "join", join_authorised_via_users_server=ALICE)
            servers = servers_that_must_sign(event.pdu, version)
            self.assertEqual("a.example" in servers, version.restricted_join_rule, identifier)
