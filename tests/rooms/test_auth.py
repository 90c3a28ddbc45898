"""The authorisation rules, walked rule by rule for room versions 10, 11 and 12.

Rules shared by all three run once per version through ``_SharedRules``; a
denial names the rule in v10/v11 numbering and ``expect`` translates it, so
the same table checks that v12 cites its shifted numbers. Version-specific
rules (the creator in v10, creators with infinite power in v12) have their own
classes. Rooms are built event by event with the real builder.
"""

from typing import TYPE_CHECKING, Any

from signedjson.key import generate_signing_key, get_verify_key
from twisted.trial.unittest import TestCase
from unpaddedbase64 import encode_base64

from roost.rooms.auth import (
    CREATOR_POWER_LEVEL,
    AuthError,
    auth_events_by_key,
    check_auth_rules,
    get_creators,
    get_named_level,
    get_power_level,
    redaction_takes_effect,
)
from roost.rooms.builder import (
    build_event_pdu,
    create_event_content,
    finalize_pdu,
    select_auth_event_ids,
)
from roost.rooms.events import Event, canonical_json
from roost.rooms.hashing import server_name_of
from roost.rooms.versions import KNOWN_ROOM_VERSIONS, RoomVersion

V10 = KNOWN_ROOM_VERSIONS["10"]
V11 = KNOWN_ROOM_VERSIONS["11"]
V12 = KNOWN_ROOM_VERSIONS["12"]
KEY = generate_signing_key("1")
ALICE = "@alice:a.example"  # creates the room
MOD = "@mod:a.example"  # power level 50
BOB = "@bob:b.example"  # an ordinary member
CAROL = "@carol:c.example"  # an outsider
MOD2 = "@mod2:a.example"  # another moderator at 50
ALLOW = None


class Room:
    """A room grown event by event; state is a dict of accepted events."""

    def __init__(self, version: RoomVersion, create_content: dict[str, Any] | None = None) -> None:
        self.version = version
        self.state: dict[tuple[str, str], Event] = {}
        self.events: dict[str, Event] = {}
        self.room_id = "!room:a.example"
        self.ts = 1000
        self.last: list[str] = []
        content = create_event_content(version, ALICE) if create_content is None else create_content
        self.create = self.force("m.room.create", ALICE, content, "")
        self.room_id = self.create.room_id

    def make(
        self,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None = None,
        **pdu_changes: Any,
    ) -> Event:
        """Build, hash and sign an event on top of the room, auth events picked from state."""
        current = {key: event.event_id for key, event in self.state.items()}
        is_hydra_create = self.version.hydra and event_type == "m.room.create"
        self.ts += 1
        pdu = build_event_pdu(
            self.version,
            None if is_hydra_create else self.room_id,
            sender,
            event_type,
            content,
            state_key,
            prev_event_ids=self.last,
            auth_event_ids=select_auth_event_ids(
                self.version, event_type, sender, state_key, content, current
            ),
            depth=len(self.events) + 1,
            origin_server_ts=self.ts,
        )
        pdu.update(pdu_changes)
        _, pdu = finalize_pdu(pdu, self.version, server_name_of(sender), KEY)
        return Event.from_pdu(pdu, self.version)

    def auth_map(self, event: Event) -> dict[tuple[str, str], Event]:
        """The event's own auth events, keyed, with the create event added in v12."""
        return auth_events_by_key(
            self.version, event, self.events.values(), create_event=self.create
        )

    def check(self, event: Event) -> None:
        check_auth_rules(self.version, event, self.auth_map(event))

    def store(self, event: Event) -> Event:
        self.events[event.event_id] = event
        self.last = [event.event_id]
        if event.state_key is not None:
            self.state[(event.type, event.state_key)] = event
        return event

    def send(
        self, event_type: str, sender: str, content: dict[str, Any], state_key: Any = None
    ) -> Event:
        """Add an event that must pass auth."""
        event = self.make(event_type, sender, content, state_key)
        self.check(event)
        return self.store(event)

    def force(
        self, event_type: str, sender: str, content: dict[str, Any], state_key: Any = None
    ) -> Event:
        """Add an event without checking it, to reach a state under test directly."""
        return self.store(self.make(event_type, sender, content, state_key))

    def member(self, sender: str, target: str, membership: str, **content: Any) -> Event:
        return self.make("m.room.member", sender, {"membership": membership, **content}, target)

    def set_membership(self, user: str, membership: str) -> None:
        self.force("m.room.member", user, {"membership": membership}, user)

    def power_levels(self, **content: Any) -> None:
        self.force("m.room.power_levels", ALICE, content, "")

    def join_rule(self, rule: str) -> None:
        self.force("m.room.join_rules", ALICE, {"join_rule": rule}, "")


def standard_room(version: RoomVersion) -> Room:
    """Alice created it (100, or a creator in v12), Mod has 50, Bob 0; public."""
    room = Room(version)
    room.send("m.room.member", ALICE, {"membership": "join"}, ALICE)
    users = {MOD: 50} if version.hydra else {ALICE: 100, MOD: 50}
    room.send("m.room.power_levels", ALICE, {"users": users}, "")
    room.send("m.room.join_rules", ALICE, {"join_rule": "public"}, "")
    room.send("m.room.member", MOD, {"membership": "join"}, MOD)
    room.send("m.room.member", BOB, {"membership": "join"}, BOB)
    return room


def rule_in(version: RoomVersion, rule: str) -> str:
    """Shift a v10/v11 rule number to v12's numbering (written out, not borrowed)."""
    if not version.hydra:
        return rule
    parts = [int(p) for p in rule.split(".")]
    if parts[0] >= 2:
        parts[0] += 1
    if parts[0] == 10 and len(parts) > 1 and parts[1] >= 4:
        parts[1] += 1
    return ".".join(map(str, parts))


# The shared rules must not run on their own (they have no version), so they
# are a mixin; type checkers see a TestCase to know its assertions.
_Mixin = TestCase if TYPE_CHECKING else object


class _SharedRules(_Mixin):
    """The rules as v10, v11 and v12 share them; mixed into a TestCase per version."""

    version: RoomVersion

    def expect(self, room: Room, event: Event, rule: str | None, note: str = "") -> None:
        """Assert ``event`` is allowed (rule None) or denied citing ``rule``."""
        if rule is None:
            try:
                room.check(event)
            except AuthError as e:
                self.fail(f"{note}: expected allow, got {e.reason}")
            return
        with self.assertRaises(AuthError, msg=note) as caught:
            room.check(event)
        expected = f"rule {rule_in(self.version, rule)}:"
        self.assertTrue(
            caught.exception.reason.startswith(expected), f"{note}: {caught.exception.reason}"
        )

    # -- rule 1: create ---------------------------------------------------------

    def test_create_event_is_allowed(self) -> None:
        room = Room(self.version)
        room.check(room.create)

    def test_create_with_prev_events_is_denied_1_1(self) -> None:
        room = Room(self.version)
        content = create_event_content(self.version, ALICE)
        event = room.make("m.room.create", ALICE, content, "", prev_events=[room.create.event_id])
        self.expect(room, event, "1.1")

    def test_create_with_an_unknown_room_version_is_denied_1_3(self) -> None:
        room = Room(self.version)
        for room_version in ("13", "0", "org.example.x", 12):
            content = dict(create_event_content(self.version, ALICE), room_version=room_version)
            event = room.make("m.room.create", ALICE, content, "", prev_events=[])
            self.expect(room, event, "1.3", repr(room_version))

    def test_create_naming_another_known_version_is_allowed(self) -> None:
        room = Room(self.version)
        content = dict(create_event_content(self.version, ALICE), room_version="10")
        self.expect(room, room.make("m.room.create", ALICE, content, "", prev_events=[]), ALLOW)

    def test_create_without_room_version_is_allowed(self) -> None:
        room = Room(self.version)
        content = create_event_content(self.version, ALICE)
        del content["room_version"]
        self.expect(room, room.make("m.room.create", ALICE, content, "", prev_events=[]), ALLOW)

    # -- rule 2: the auth events --------------------------------------------------

    def test_auth_event_the_event_does_not_need_is_denied_2_2(self) -> None:
        room = standard_room(self.version)
        event = room.make("m.room.message", BOB, {"body": "hi"})
        auth = room.auth_map(event)
        auth[("m.room.join_rules", "")] = room.state[("m.room.join_rules", "")]
        with self.assertRaises(AuthError) as caught:
            check_auth_rules(self.version, event, auth)
        self.assertTrue(caught.exception.reason.startswith(f"rule {rule_in(self.version, '2.2')}:"))

    def test_auth_event_filed_under_the_wrong_key_is_denied_2_2(self) -> None:
        room = standard_room(self.version)
        event = room.make("m.room.message", BOB, {"body": "hi"})
        auth = room.auth_map(event)
        auth[("m.room.member", BOB)] = room.state[("m.room.member", MOD)]
        self.assertRaises(AuthError, check_auth_rules, self.version, event, auth)

    def test_auth_event_from_another_room_is_denied_2_5(self) -> None:
        room, other = standard_room(self.version), standard_room(self.version)
        other.room_id = "!other:a.example"
        foreign = other.force("m.room.member", BOB, {"membership": "join"}, BOB)
        event = room.make("m.room.message", BOB, {"body": "hi"})
        auth = room.auth_map(event)
        auth[("m.room.member", BOB)] = foreign
        with self.assertRaises(AuthError) as caught:
            check_auth_rules(self.version, event, auth)
        expected = f"rule {rule_in(self.version, '2.5')}: auth event {foreign.event_id}"
        self.assertTrue(caught.exception.reason.startswith(expected), caught.exception.reason)

    def test_duplicate_auth_event_types_are_denied_2_1(self) -> None:
        room = standard_room(self.version)
        first_join = room.state[("m.room.member", BOB)]
        room.set_membership(BOB, "join")
        event = room.make("m.room.message", BOB, {"body": "hi"})
        listed = [*event.auth_event_ids, first_join.event_id]
        duplicated = room.make("m.room.message", BOB, {"body": "hi"}, auth_events=listed)
        with self.assertRaises(AuthError) as caught:
            room.auth_map(duplicated)
        self.assertTrue(caught.exception.reason.startswith(f"rule {rule_in(self.version, '2.1')}:"))

    def test_rejected_auth_event_is_denied_2_3(self) -> None:
        room = standard_room(self.version)
        event = room.make("m.room.message", BOB, {"body": "hi"})
        rejected = {room.state[("m.room.member", BOB)].event_id}
        with self.assertRaises(AuthError) as caught:
            auth_events_by_key(
                self.version,
                event,
                room.events.values(),
                create_event=room.create,
                rejected_event_ids=rejected,
            )
        self.assertTrue(caught.exception.reason.startswith(f"rule {rule_in(self.version, '2.3')}:"))

    def test_auth_event_that_is_not_state_is_denied(self) -> None:
        room = standard_room(self.version)
        message = room.force("m.room.message", BOB, {"body": "hi"})
        event = room.make("m.room.message", BOB, {"body": "x"}, auth_events=[message.event_id])
        self.assertRaises(AuthError, room.auth_map, event)

    def test_missing_auth_event_is_reported(self) -> None:
        room = standard_room(self.version)
        event = room.make("m.room.message", BOB, {"body": "x"}, auth_events=["$nowhere"])
        self.assertRaises(AuthError, room.auth_map, event)

    # -- rule 3: m.federate -------------------------------------------------------------

    def test_unfederated_room_admits_only_the_creators_server_3(self) -> None:
        room = Room(
            self.version, dict(create_event_content(self.version, ALICE), **{"m.federate": False})
        )
        room.send("m.room.member", ALICE, {"membership": "join"}, ALICE)
        room.join_rule("public")
        self.expect(room, room.member(MOD, MOD, "join"), ALLOW, "same server")
        self.expect(room, room.member(BOB, BOB, "join"), "3", "other server")

    def test_explicitly_federated_room_admits_other_servers(self) -> None:
        room = Room(
            self.version, dict(create_event_content(self.version, ALICE), **{"m.federate": True})
        )
        room.send("m.room.member", ALICE, {"membership": "join"}, ALICE)
        room.join_rule("public")
        self.expect(room, room.member(BOB, BOB, "join"), ALLOW)

    # -- rule 4: membership -------------------------------------------------------------

    def test_member_event_needs_a_state_key_and_membership_4_1(self) -> None:
        room = standard_room(self.version)
        self.expect(
            room, room.make("m.room.member", BOB, {"membership": "join"}), "4.1", "no state_key"
        )
        self.expect(
            room, room.make("m.room.member", BOB, {"displayname": "B"}, BOB), "4.1", "no membership"
        )

    def test_unknown_membership_is_denied_4_8(self) -> None:
        room = standard_room(self.version)
        for membership in ("joined", "JOIN", 5, None):
            event = room.make("m.room.member", BOB, {"membership": membership}, BOB)
            self.expect(room, event, "4.8", repr(membership))

    def test_creators_first_join_right_after_create_4_3_1(self) -> None:
        room = Room(self.version)
        self.expect(room, room.member(ALICE, ALICE, "join"), ALLOW)

    def test_creators_join_needs_the_create_as_only_prev_event(self) -> None:
        room = Room(self.version)
        room.force("m.room.topic", ALICE, {"topic": "t"}, "")
        self.expect(room, room.member(ALICE, ALICE, "join"), "4.3.4", "not right after create")

    def test_someone_elses_join_right_after_create_is_not_the_creators(self) -> None:
        room = Room(self.version)
        self.expect(room, room.member(BOB, BOB, "join"), "4.3.4")

    def test_joining_as_someone_else_is_denied_4_3_2(self) -> None:
        room = standard_room(self.version)
        self.expect(room, room.member(BOB, CAROL, "join"), "4.3.2")

    def test_join_outcomes_by_join_rule_and_prior_membership(self) -> None:
        cases: list[tuple[str | None, str | None, str | None]] = [
            ("public", None, ALLOW),
            ("public", "leave", ALLOW),
            ("public", "invite", ALLOW),
            ("public", "knock", ALLOW),
            ("public", "ban", "4.3.3"),
            ("invite", None, "4.3.4"),
            ("invite", "invite", ALLOW),
            ("invite", "join", ALLOW),
            ("invite", "leave", "4.3.4"),
            ("invite", "knock", "4.3.4"),
            ("invite", "ban", "4.3.3"),
            ("knock", None, "4.3.4"),
            ("knock", "knock", "4.3.4"),
            ("knock", "invite", ALLOW),
            ("restricted", None, "4.3.5.2"),
            ("restricted", "invite", ALLOW),
            ("restricted", "join", ALLOW),
            ("restricted", "ban", "4.3.3"),
            ("knock_restricted", None, "4.3.5.2"),
            ("knock_restricted", "invite", ALLOW),
            ("private", None, "4.3.7"),
            ("private", "invite", "4.3.7"),
            (None, None, "4.3.4"),  # no join rules event: invite only
            (None, "invite", ALLOW),
        ]
        for join_rule, prior, outcome in cases:
            room = Room(self.version)
            room.send("m.room.member", ALICE, {"membership": "join"}, ALICE)
            if join_rule is not None:
                room.join_rule(join_rule)
            if prior is not None:
                room.set_membership(CAROL, prior)
            self.expect(room, room.member(CAROL, CAROL, "join"), outcome, f"{join_rule}/{prior}")

    def test_restricted_join_authorised_via_a_member_who_may_invite(self) -> None:
        for join_rule in ("restricted", "knock_restricted"):
            room = standard_room(self.version)
            room.join_rule(join_rule)
            room.power_levels(**self.users_with({MOD: 50}), invite=50)
            via = {"join_authorised_via_users_server": MOD}
            self.expect(room, room.member(CAROL, CAROL, "join", **via), ALLOW, join_rule)

    def test_restricted_join_via_a_user_below_the_invite_level_is_denied(self) -> None:
        room = standard_room(self.version)
        room.join_rule("restricted")
        room.power_levels(**self.users_with({MOD: 50}), invite=50)
        via = {"join_authorised_via_users_server": BOB}
        self.expect(room, room.member(CAROL, CAROL, "join", **via), "4.3.5.2")

    def test_restricted_join_via_a_non_member_is_denied(self) -> None:
        room = standard_room(self.version)
        room.join_rule("restricted")
        room.set_membership(MOD, "leave")
        via = {"join_authorised_via_users_server": MOD}
        self.expect(room, room.member(CAROL, CAROL, "join", **via), "4.3.5.2")

    def test_restricted_join_with_a_non_string_authoriser_is_denied(self) -> None:
        room = standard_room(self.version)
        room.join_rule("restricted")
        event = room.member(
            CAROL, CAROL, "join", join_authorised_via_users_server=["@mod:a.example"]
        )
        self.expect(room, event, "4.3.5.2")

    def test_invite_outcomes(self) -> None:
        # (sender, target's prior membership, invite level, outcome)
        cases: list[tuple[str, str | None, int, str | None]] = [
            (BOB, None, 0, ALLOW),
            (BOB, "leave", 0, ALLOW),
            (BOB, "invite", 0, ALLOW),
            (BOB, "knock", 0, ALLOW),
            (BOB, "join", 0, "4.4.3"),
            (BOB, "ban", 0, "4.4.3"),
            (BOB, None, 50, "4.4.5"),
            (MOD, None, 50, ALLOW),
            (CAROL, None, 0, "4.4.2"),
        ]
        for sender, prior, invite_level, outcome in cases:
            room = standard_room(self.version)
            room.power_levels(**self.users_with({MOD: 50}), invite=invite_level)
            target = "@dave:d.example"
            if prior is not None:
                room.set_membership(target, prior)
            event = room.member(sender, target, "invite")
            self.expect(room, event, outcome, f"{sender} {prior} {invite_level}")

    def test_invite_by_an_invited_user_is_denied_4_4_2(self) -> None:
        room = standard_room(self.version)
        room.set_membership(CAROL, "invite")
        self.expect(room, room.member(CAROL, "@dave:d.example", "invite"), "4.4.2")

    def test_leave_outcomes_for_oneself(self) -> None:
        for prior, outcome in [
            ("join", ALLOW),
            ("invite", ALLOW),
            ("knock", ALLOW),
            ("leave", "4.5.1"),
            ("ban", "4.5.1"),
            (None, "4.5.1"),
        ]:
            room = standard_room(self.version)
            if prior is not None:
                room.set_membership(CAROL, prior)
            self.expect(room, room.member(CAROL, CAROL, "leave"), outcome, str(prior))

    def test_kick_and_unban_outcomes(self) -> None:
        # (sender, target, target's membership, levels, outcome)
        cases: list[tuple[str, str, str, dict[str, int], str | None]] = [
            (MOD, BOB, "join", {}, ALLOW),
            (MOD, BOB, "invite", {}, ALLOW),  # revoking an invite
            (BOB, MOD, "join", {}, "4.5.5"),  # below the kick level
            (MOD, BOB, "join", {"kick": 60}, "4.5.5"),
            (MOD, MOD2, "join", {}, "4.5.5"),  # equal power
            (MOD, BOB, "ban", {}, ALLOW),  # unban: ban and kick level
            (MOD, BOB, "ban", {"ban": 60}, "4.5.3"),
            (MOD, BOB, "ban", {"kick": 60}, "4.5.5"),
            (CAROL, BOB, "join", {}, "4.5.2"),  # kicker not in the room
        ]
        for sender, target, membership, levels, outcome in cases:
            room = standard_room(self.version)
            room.power_levels(**self.users_with({MOD: 50, MOD2: 50}), **levels)
            room.set_membership(target, membership)
            note = f"{sender} -> {target} ({membership}, {levels})"
            self.expect(room, room.member(sender, target, "leave"), outcome, note)

    def test_ban_outcomes(self) -> None:
        cases: list[tuple[str, str, dict[str, int], str | None]] = [
            (MOD, BOB, {}, ALLOW),
            (MOD, CAROL, {}, ALLOW),  # banning a non-member pre-emptively
            (BOB, CAROL, {}, "4.6.3"),
            (MOD, BOB, {"ban": 60}, "4.6.3"),
            (MOD, MOD2, {}, "4.6.3"),
            (CAROL, BOB, {}, "4.6.1"),
        ]
        for sender, target, levels, outcome in cases:
            room = standard_room(self.version)
            room.power_levels(**self.users_with({MOD: 50, MOD2: 50}), **levels)
            room.set_membership(MOD2, "join")
            self.expect(
                room, room.member(sender, target, "ban"), outcome, f"{sender} bans {target}"
            )

    def test_knock_outcomes(self) -> None:
        cases: list[tuple[str, str | None, str | None]] = [
            ("knock", None, ALLOW),
            ("knock", "leave", ALLOW),
            ("knock_restricted", None, ALLOW),
            ("knock", "ban", "4.7.4"),
            ("knock", "invite", "4.7.4"),
            ("knock", "join", "4.7.4"),
            ("public", None, "4.7.1"),
            ("invite", None, "4.7.1"),
            ("restricted", None, "4.7.1"),
        ]
        for join_rule, prior, outcome in cases:
            room = standard_room(self.version)
            room.join_rule(join_rule)
            if prior is not None:
                room.set_membership(CAROL, prior)
            self.expect(room, room.member(CAROL, CAROL, "knock"), outcome, f"{join_rule}/{prior}")

    def test_knocking_for_someone_else_is_denied_4_7_2(self) -> None:
        room = standard_room(self.version)
        room.join_rule("knock")
        self.expect(room, room.member(CAROL, "@dave:d.example", "knock"), "4.7.2")

    # -- rule 4.4.1: third party invites -----------------------------------------------

    def third_party_room(self) -> tuple[Room, dict[str, Any]]:
        """A room with an m.room.third_party_invite from Bob, and a signed block for Carol."""
        room = standard_room(self.version)
        identity_key = generate_signing_key("0")
        public_key = encode_base64(get_verify_key(identity_key).encode())
        room.force(
            "m.room.third_party_invite", BOB, {"public_key": public_key, "display_name": "c"}, "tok"
        )
        signed: dict[str, Any] = {"mxid": CAROL, "token": "tok", "sender": BOB}
        signature = encode_base64(identity_key.sign(canonical_json(signed)).signature)
        signed["signatures"] = {"id.example": {"ed25519:0": signature}}
        return room, signed

    def test_third_party_invite_with_a_valid_signature_is_allowed(self) -> None:
        room, signed = self.third_party_room()
        event = room.member(
            BOB, CAROL, "invite", third_party_invite={"display_name": "c", "signed": signed}
        )
        self.expect(room, event, ALLOW)

    def test_third_party_invite_denials(self) -> None:
        room, signed = self.third_party_room()
        forged = dict(signed, signatures={"id.example": {"ed25519:0": encode_base64(b"\x01" * 64)}})
        cases: list[tuple[str, Any, str, str]] = [
            ("no signed block", {"display_name": "c"}, CAROL, "4.4.1.2"),
            ("signed not an object", {"signed": "x"}, CAROL, "4.4.1.2"),
            (
                "no token",
                {"signed": {k: v for k, v in signed.items() if k != "token"}},
                CAROL,
                "4.4.1.3",
            ),
            (
                "no mxid",
                {"signed": {k: v for k, v in signed.items() if k != "mxid"}},
                CAROL,
                "4.4.1.3",
            ),
            ("mxid is not the invitee", {"signed": signed}, "@dave:d.example", "4.4.1.4"),
            ("unknown token", {"signed": dict(signed, token="other")}, CAROL, "4.4.1.5"),
            ("bad signature", {"signed": forged}, CAROL, "4.4.1.8"),
        ]
        for note, third_party_invite, target, rule in cases:
            event = room.member(BOB, target, "invite", third_party_invite=third_party_invite)
            self.expect(room, event, rule, note)

    def test_third_party_invite_from_another_sender_is_denied_4_4_1_6(self) -> None:
        room, signed = self.third_party_room()
        event = room.member(MOD, CAROL, "invite", third_party_invite={"signed": signed})
        self.expect(room, event, "4.4.1.6")

    def test_third_party_invite_of_a_banned_user_is_denied_4_4_1_1(self) -> None:
        room, signed = self.third_party_room()
        room.set_membership(CAROL, "ban")
        event = room.member(BOB, CAROL, "invite", third_party_invite={"signed": signed})
        self.expect(room, event, "4.4.1.1")

    def test_third_party_invite_key_may_come_from_public_keys(self) -> None:
        room, signed = self.third_party_room()
        old = room.state[("m.room.third_party_invite", "tok")].content
        content = {"public_key": "AAAA", "public_keys": [{"public_key": old["public_key"]}]}
        room.force("m.room.third_party_invite", BOB, content, "tok")
        event = room.member(BOB, CAROL, "invite", third_party_invite={"signed": signed})
        self.expect(room, event, ALLOW)

    # -- rules 5 to 8 ------------------------------------------------------------------

    def test_only_joined_members_send_other_events_5(self) -> None:
        for membership, outcome in [
            ("join", ALLOW),
            ("invite", "5"),
            ("knock", "5"),
            ("leave", "5"),
            (None, "5"),
        ]:
            room = standard_room(self.version)
            if membership is not None:
                room.set_membership(CAROL, membership)
            self.expect(
                room, room.make("m.room.message", CAROL, {"body": "hi"}), outcome, str(membership)
            )

    def test_third_party_invite_event_needs_the_invite_level_6(self) -> None:
        for invite_level, sender, outcome in [
            (0, BOB, ALLOW),
            (50, BOB, "6.1"),
            (50, MOD, ALLOW),
            (0, CAROL, "5"),
        ]:
            room = standard_room(self.version)
            room.power_levels(**self.users_with({MOD: 50}), invite=invite_level)
            event = room.make("m.room.third_party_invite", sender, {"public_key": "k"}, "tok")
            self.expect(room, event, outcome, f"{sender} at invite {invite_level}")

    def test_required_power_level_for_the_event_type_7(self) -> None:
        cases: list[tuple[str, str | None, dict[str, Any], str, str | None]] = [
            ("m.room.message", None, {}, BOB, ALLOW),
            ("m.room.message", None, {"events_default": 10}, BOB, "7"),
            ("m.room.message", None, {"events": {"m.room.message": 10}}, BOB, "7"),
            (
                "m.room.message",
                None,
                {"events_default": 10, "events": {"m.room.message": 0}},
                BOB,
                ALLOW,
            ),
            ("m.room.topic", "", {}, BOB, "7"),  # state_default 50
            ("m.room.topic", "", {}, MOD, ALLOW),
            ("m.room.topic", "", {"state_default": 60}, MOD, "7"),
            ("m.room.topic", "", {"events": {"m.room.topic": 0}}, BOB, ALLOW),
            ("m.room.redaction", None, {}, BOB, ALLOW),  # the redact level is not an auth rule
            ("m.room.redaction", None, {"events": {"m.room.redaction": 10}}, BOB, "7"),
        ]
        for event_type, state_key, levels, sender, outcome in cases:
            room = standard_room(self.version)
            room.power_levels(**self.users_with({MOD: 50}), **levels)
            event = room.make(event_type, sender, {"body": "x"}, state_key)
            self.expect(room, event, outcome, f"{event_type} by {sender} with {levels}")

    def test_user_state_keys_belong_to_their_user_8(self) -> None:
        room = standard_room(self.version)
        room.power_levels(**self.users_with({MOD: 50}), state_default=0)
        self.expect(room, room.make("org.example.status", BOB, {}, BOB), ALLOW, "own key")
        self.expect(room, room.make("org.example.status", BOB, {}, MOD), "8", "someone else's key")
        self.expect(room, room.make("org.example.status", BOB, {}, "plain"), ALLOW, "non-user key")

    def test_other_events_are_allowed_10(self) -> None:
        room = standard_room(self.version)
        self.expect(room, room.make("org.example.custom", BOB, {"anything": [1, 2]}), ALLOW)

    # -- rule 9: power levels -------------------------------------------------------------

    def users_with(self, users: dict[str, int]) -> dict[str, Any]:
        """power level content users: Alice at 100 before v12, where she is a creator."""
        return {"users": users if self.version.hydra else {ALICE: 100, **users}}

    def test_power_levels_shape_rules_9_1_to_9_3(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"ban": "50"}, "9.1"),
            ({"kick": True}, "9.1"),
            ({"users_default": None}, "9.1"),
            ({"events": {"m.room.name": "50"}}, "9.2"),
            ({"events": ["m.room.name"]}, "9.2"),
            ({"notifications": {"room": False}}, "9.2"),
            ({"users": {"not-a-user": 10}}, "9.3"),
            ({"users": {BOB: "10"}}, "9.3"),
            ({"users": [BOB]}, "9.3"),
        ]
        for content, rule in cases:
            room = standard_room(self.version)
            merged = {**self.users_with({MOD: 50}), **content}
            self.expect(
                room, room.make("m.room.power_levels", MOD, merged, ""), rule, repr(content)
            )

    def test_first_power_levels_event_is_allowed_whatever_it_grants_9_4(self) -> None:
        room = Room(self.version)
        room.send("m.room.member", ALICE, {"membership": "join"}, ALICE)
        content = {**self.users_with({BOB: 1000}), "ban": 5000}
        self.expect(room, room.make("m.room.power_levels", ALICE, content, ""), ALLOW)

    def test_power_level_changes_by_a_moderator_at_50(self) -> None:
        base = {"ban": 50, "kick": 50, "events": {"m.room.name": 50, "m.room.tombstone": 100}}
        cases: list[tuple[str, dict[str, Any], str | None]] = [
            ("lower ban within reach", {"ban": 40}, ALLOW),
            ("raise ban beyond reach", {"ban": 60}, "9.5.2"),
            ("add redact beyond reach", {"redact": 70}, "9.5.2"),
            ("remove kick within reach", {"kick": None}, ALLOW),
            (
                "lower a tombstone level above reach",
                {"events": {"m.room.name": 50, "m.room.tombstone": 50}},
                "9.6.1",
            ),
            ("remove a level above reach", {"events": {"m.room.name": 50}}, "9.6.1"),
            (
                "add an event level above reach",
                {"events": {**base["events"], "m.room.topic": 51}},
                "9.7.1",
            ),
            (
                "add an event level within reach",
                {"events": {**base["events"], "m.room.topic": 50}},
                ALLOW,
            ),
            ("add a notifications level above reach", {"notifications": {"room": 60}}, "9.7.1"),
            ("promote a user to one's own level", {"users": {MOD: 50, MOD2: 50, BOB: 50}}, ALLOW),
            ("promote a user above one's level", {"users": {MOD: 50, MOD2: 50, BOB: 51}}, "9.9.1"),
            ("demote oneself", {"users": {MOD: 10, MOD2: 50}}, ALLOW),
            ("demote a peer", {"users": {MOD: 50, MOD2: 0}}, "9.8.1"),
            ("remove a peer", {"users": {MOD: 50}}, "9.8.1"),
        ]
        for note, change, outcome in cases:
            room = standard_room(self.version)
            old_users = {MOD: 50, MOD2: 50}
            room.power_levels(**self.users_with(old_users), **base)
            content: dict[str, Any] = {**self.users_with(old_users), **base}
            for key, value in change.items():
                if key == "users":
                    content.update(self.users_with(value))
                elif value is None:
                    content.pop(key)
                else:
                    content[key] = value
            self.expect(room, room.make("m.room.power_levels", MOD, content, ""), outcome, note)

    def test_changing_a_level_set_above_the_sender_is_denied_9_5_1(self) -> None:
        room = standard_room(self.version)
        room.power_levels(**self.users_with({MOD: 50}), state_default=50, ban=80)
        content = {**self.users_with({MOD: 50}), "state_default": 50, "ban": 50}
        self.expect(room, room.make("m.room.power_levels", MOD, content, ""), "9.5.1")

    def test_demoting_a_lower_user_is_allowed(self) -> None:
        room = standard_room(self.version)
        room.power_levels(**self.users_with({MOD: 50, BOB: 10}))
        content = self.users_with({MOD: 50, BOB: 0})
        self.expect(room, room.make("m.room.power_levels", MOD, content, ""), ALLOW)

    # -- helpers ---------------------------------------------------------------------------

    def test_named_levels_default_when_unset(self) -> None:
        room = standard_room(self.version)
        auth = room.state
        self.assertEqual(get_named_level(auth, "ban", 50), 50)
        room.power_levels(**self.users_with({}), ban=7)
        self.assertEqual(get_named_level(room.state, "ban", 50), 7)
        self.assertEqual(get_named_level({}, "invite", 0), 0)

    def test_users_default_applies_to_unlisted_users(self) -> None:
        room = standard_room(self.version)
        room.power_levels(**self.users_with({MOD: 50}), users_default=5)
        self.assertEqual(get_power_level(BOB, room.state, self.version), 5)
        self.assertEqual(get_power_level(MOD, room.state, self.version), 50)


class AuthRulesV10Tests(_SharedRules, TestCase):
    version = V10

    def test_create_without_creator_is_denied_1_4(self) -> None:
        room = Room(V10)
        event = room.make("m.room.create", ALICE, {"room_version": "10"}, "", prev_events=[])
        self.expect(room, event, "1.4")

    def test_create_on_another_server_than_the_room_is_denied_1_2(self) -> None:
        room = Room(V10)
        content = create_event_content(V10, BOB)
        self.expect(room, room.make("m.room.create", BOB, content, "", prev_events=[]), "1.2")

    def test_content_creator_is_the_creator_for_the_first_join(self) -> None:
        room = Room(V10, {"room_version": "10", "creator": BOB})
        self.expect(room, room.member(BOB, BOB, "join"), ALLOW, "content.creator")
        self.expect(room, room.member(ALICE, ALICE, "join"), "4.3.4", "the sender is not")

    def test_content_creator_has_100_without_power_levels(self) -> None:
        room = Room(V10, {"room_version": "10", "creator": BOB})
        self.assertEqual(get_creators(room.create, V10), frozenset({BOB}))
        self.assertEqual(get_power_level(BOB, room.state, V10), 100)
        self.assertEqual(get_power_level(ALICE, room.state, V10), 0)

    def test_denials_cite_v10_numbers(self) -> None:
        room = standard_room(V10)
        with self.assertRaises(AuthError) as caught:
            room.check(room.member(BOB, CAROL, "join"))
        self.assertTrue(caught.exception.reason.startswith("rule 4.3.2:"))


class AuthRulesV11Tests(_SharedRules, TestCase):
    version = V11

    def test_create_without_creator_is_allowed(self) -> None:
        room = Room(V11, {"room_version": "11"})
        room.check(room.create)

    def test_create_on_another_server_than_the_room_is_denied_1_2(self) -> None:
        room = Room(V11)
        self.expect(room, room.make("m.room.create", BOB, {}, "", prev_events=[]), "1.2")

    def test_sender_is_the_creator_whatever_content_creator_says(self) -> None:
        room = Room(V11, {"room_version": "11", "creator": BOB})
        self.expect(room, room.member(BOB, BOB, "join"), "4.3.4", "content.creator is ignored")
        self.expect(room, room.member(ALICE, ALICE, "join"), ALLOW, "the sender")
        self.assertEqual(get_creators(room.create, V11), frozenset({ALICE}))

    def test_creator_has_100_and_others_0_without_power_levels(self) -> None:
        room = Room(V11)
        self.assertEqual(get_power_level(ALICE, room.state, V11), 100)
        self.assertEqual(get_power_level(BOB, room.state, V11), 0)

    def test_additional_creators_mean_nothing_before_v12(self) -> None:
        room = Room(V11, {"room_version": "11", "additional_creators": "junk"})
        room.check(room.create)
        self.assertEqual(get_creators(room.create, V11), frozenset({ALICE}))


class AuthRulesV12Tests(_SharedRules, TestCase):
    version = V12

    def test_create_with_a_room_id_is_denied_1_2(self) -> None:
        room = Room(V12)
        event = room.make(
            "m.room.create",
            ALICE,
            {"room_version": "12"},
            "",
            room_id="!x:a.example",
            prev_events=[],
        )
        self.expect(room, event, "1.2")

    def test_create_from_any_server_is_allowed(self) -> None:
        room = Room(V12)
        room.check(room.make("m.room.create", BOB, {"room_version": "12"}, "", prev_events=[]))

    def test_additional_creators_must_be_user_ids_1_4(self) -> None:
        room = Room(V12)
        for additional, outcome in [
            ([BOB, CAROL], ALLOW),
            ([], ALLOW),
            (BOB, "1.4"),
            ([BOB, 5], "1.4"),
            (["bob"], "1.4"),
            ([BOB, "@x:"], "1.4"),
        ]:
            content = {"room_version": "12", "additional_creators": additional}
            event = room.make("m.room.create", ALICE, content, "", prev_events=[])
            self.expect(room, event, outcome, repr(additional))

    def test_room_id_must_name_the_create_event_2(self) -> None:
        room = standard_room(V12)
        event = room.make("m.room.message", BOB, {"body": "hi"})
        auth = room.auth_map(event)
        auth[("m.room.create", "")] = Room(V12, {"room_version": "12", "x": 1}).create
        with self.assertRaises(AuthError) as caught:
            check_auth_rules(V12, event, auth)
        self.assertTrue(caught.exception.reason.startswith("rule 2:"))

    def test_missing_create_event_is_denied_2(self) -> None:
        room = standard_room(V12)
        event = room.make("m.room.message", BOB, {"body": "hi"})
        auth = auth_events_by_key(V12, event, room.events.values())
        with self.assertRaises(AuthError) as caught:
            check_auth_rules(V12, event, auth)
        self.assertTrue(caught.exception.reason.startswith("rule 2:"))

    def test_rejected_create_event_is_denied_2(self) -> None:
        room = standard_room(V12)
        event = room.make("m.room.message", BOB, {"body": "hi"})
        with self.assertRaises(AuthError) as caught:
            auth_events_by_key(
                V12, event, room.events.values(), create_event=room.create,
                rejected_event_ids={room.create.event_id},
            )  # fmt: skip
        self.assertTrue(caught.exception.reason.startswith("rule 2:"))

    def test_listing_the_create_event_is_denied_3_2(self) -> None:
        room = standard_room(V12)
        event = room.make("m.room.message", BOB, {"body": "hi"})
        listed = room.make(
            "m.room.message",
            BOB,
            {"body": "hi"},
            auth_events=[*event.auth_event_ids, room.create.event_id],
        )
        with self.assertRaises(AuthError) as caught:
            room.auth_map(listed)
        self.assertTrue(caught.exception.reason.startswith("rule 3.2:"))

    def test_denials_cite_v12_numbers(self) -> None:
        room = standard_room(V12)
        cases = [
            (room.member(BOB, CAROL, "join"), "rule 5.3.2:"),
            (room.make("m.room.message", CAROL, {}), "rule 6:"),
            (room.make("m.room.topic", BOB, {}, ""), "rule 8:"),
            (
                room.make("m.room.power_levels", MOD, {"users": {MOD: 50, BOB: 60}}, ""),
                "rule 10.10.1:",
            ),
        ]
        for event, prefix in cases:
            with self.assertRaises(AuthError) as caught:
                room.check(event)
            self.assertTrue(caught.exception.reason.startswith(prefix), caught.exception.reason)

    def test_creators_have_infinite_power_with_or_without_power_levels(self) -> None:
        room = Room(V12, create_event_content(V12, ALICE, additional_creators=[BOB]))
        self.assertEqual(get_creators(room.create, V12), frozenset({ALICE, BOB}))
        for user in (ALICE, BOB):
            self.assertEqual(get_power_level(user, room.state, V12), CREATOR_POWER_LEVEL)
        self.assertEqual(get_power_level(CAROL, room.state, V12), 0)
        room.power_levels(users={CAROL: 100}, users_default=10)
        self.assertEqual(get_power_level(BOB, room.state, V12), CREATOR_POWER_LEVEL)
        self.assertEqual(get_power_level(CAROL, room.state, V12), 100)
        self.assertEqual(get_power_level(MOD, room.state, V12), 10)

    def test_only_the_create_sender_gets_the_first_join_shortcut(self) -> None:
        room = Room(V12, create_event_content(V12, ALICE, additional_creators=[BOB]))
        self.expect(room, room.member(BOB, BOB, "join"), "4.3.4")
        self.expect(room, room.member(ALICE, ALICE, "join"), ALLOW)

    def test_creators_cannot_be_listed_in_power_levels_10_4(self) -> None:
        room = Room(V12, create_event_content(V12, ALICE, additional_creators=[BOB]))
        room.send("m.room.member", ALICE, {"membership": "join"}, ALICE)
        for users in ({ALICE: 100}, {BOB: 0}):
            event = room.make("m.room.power_levels", ALICE, {"users": users}, "")
            with self.assertRaises(AuthError) as caught:
                room.check(event)
            self.assertTrue(caught.exception.reason.startswith("rule 10.4:"), users)
        self.expect(
            room, room.make("m.room.power_levels", ALICE, {"users": {CAROL: 100}}, ""), ALLOW
        )

    def test_nobody_can_kick_or_ban_a_creator_not_even_another_creator(self) -> None:
        room = Room(V12, create_event_content(V12, ALICE, additional_creators=[BOB]))
        room.send("m.room.member", ALICE, {"membership": "join"}, ALICE)
        room.join_rule("public")
        room.send("m.room.member", BOB, {"membership": "join"}, BOB)
        room.power_levels(users={CAROL: 9000})
        room.send("m.room.member", CAROL, {"membership": "join"}, CAROL)
        self.expect(room, room.member(CAROL, BOB, "ban"), "4.6.3", "a high power user")
        self.expect(room, room.member(ALICE, BOB, "ban"), "4.6.3", "another creator")
        self.expect(room, room.member(ALICE, BOB, "leave"), "4.5.5", "kick another creator")
        self.expect(room, room.member(BOB, CAROL, "ban"), ALLOW, "a creator bans anyone else")

    def test_creators_may_set_any_power_level(self) -> None:
        room = standard_room(V12)
        room.power_levels(users={MOD: 50}, ban=2**53 - 1)
        content = {"users": {MOD: 2**53 - 1}, "ban": 0, "events": {"m.room.tombstone": 2**53 - 1}}
        self.expect(room, room.make("m.room.power_levels", ALICE, content, ""), ALLOW)


def redaction(room: Room, sender: str, target: Event) -> Event:
    """A redaction of ``target`` with ``redacts`` where the room version wants it."""
    if room.version.updated_redaction_rules:
        return room.make("m.room.redaction", sender, {"redacts": target.event_id})
    return room.make("m.room.redaction", sender, {}, None, redacts=target.event_id)


class RedactionTakesEffectTests(TestCase):
    def test_same_server_redactions_apply_regardless_of_power(self) -> None:
        for version in (V10, V11, V12):
            room = standard_room(version)
            target = room.force("m.room.message", BOB, {"body": "x"})
            by_peer = redaction(room, "@bob2:b.example", target)
            self.assertTrue(redaction_takes_effect(version, by_peer, target, room.state))

    def test_other_servers_need_the_redact_level(self) -> None:
        for version in (V10, V11, V12):
            room = standard_room(version)
            target = room.force("m.room.message", BOB, {"body": "x"})
            by_mod, by_carol = redaction(room, MOD, target), redaction(room, CAROL, target)
            self.assertTrue(redaction_takes_effect(version, by_mod, target, room.state))
            self.assertFalse(redaction_takes_effect(version, by_carol, target, room.state))
            room.power_levels(**{"users": {MOD: 50}}, redact=60)
            self.assertFalse(redaction_takes_effect(version, by_mod, target, room.state))

    def test_v12_creators_always_reach_the_redact_level(self) -> None:
        room = standard_room(V12)
        room.power_levels(users={}, redact=2**53 - 1)
        target = room.force("m.room.message", BOB, {"body": "x"})
        self.assertTrue(
            redaction_takes_effect(V12, redaction(room, ALICE, target), target, room.state)
        )

    def test_redaction_of_another_event_or_room_does_not_apply(self) -> None:
        room = standard_room(V11)
        target = room.force("m.room.message", BOB, {"body": "x"})
        other = room.force("m.room.message", BOB, {"body": "y"})
        by_bob = redaction(room, BOB, target)
        self.assertFalse(redaction_takes_effect(V11, by_bob, other, room.state))
        elsewhere = standard_room(V11)
        elsewhere.room_id = "!elsewhere:a.example"
        foreign = elsewhere.make("m.room.message", BOB, {"body": "x"}, event_id=target.event_id)
        self.assertFalse(redaction_takes_effect(V11, by_bob, foreign, room.state))

    def test_v10_reads_top_level_redacts_and_v11_reads_content(self) -> None:
        room10 = standard_room(V10)
        target = room10.force("m.room.message", BOB, {"body": "x"})
        in_content = room10.make("m.room.redaction", MOD, {"redacts": target.event_id})
        self.assertFalse(redaction_takes_effect(V10, in_content, target, room10.state))
        room11 = standard_room(V11)
        target11 = room11.force("m.room.message", BOB, {"body": "x"})
        top_level = room11.make("m.room.redaction", MOD, {}, None, redacts=target11.event_id)
        self.assertFalse(redaction_takes_effect(V11, top_level, target11, room11.state))

    def test_a_non_redaction_never_redacts(self) -> None:
        room = standard_room(V11)
        target = room.force("m.room.message", BOB, {"body": "x"})
        message = room.make("m.room.message", MOD, {"redacts": target.event_id})
        self.assertFalse(redaction_takes_effect(V11, message, target, room.state))
