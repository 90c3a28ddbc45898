"""Room membership over raw HTTP: join, leave, forget, invite, kick, ban, unban, /joined_rooms.

Every refusal is checked for its status and errcode and for changing nothing.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.client_api.test_rooms_http import (
    ROOM_VERSIONS,
    SERVER,
    Client,
    assert_error,
    room_snapshot,
    start_users,
)
from tests.server_harness import q

UNKNOWN_ROOM = f"!unknown:{SERVER}"


async def membership(client: Client, room_id: str, user_id: str) -> str:
    return (await client.state(room_id, "m.room.member", user_id))["membership"]


async def target(client: Client, action: str, room_id: str, user_id: str, **extra: str):  # noqa: ANN201
    return await client.call("POST", f"/rooms/{q(room_id)}/{action}", {"user_id": user_id, **extra})


class JoinTests(TestCase):
    async def test_join_public_room_by_id_by_alias_and_by_rooms_path(self) -> None:
        alice, bob, carol, dave = await start_users(self, "alice", "bob", "carol", "dave")
        for version in ROOM_VERSIONS:
            alias_name = f"pub{version}"
            room = await alice.create_room(room_version=version, preset="public_chat",
                                           room_alias_name=alias_name)
            self.assertEqual(await bob.join(room), {"room_id": room})
            self.assertEqual(await carol.join(f"#{alias_name}:{SERVER}"), {"room_id": room})
            self.assertEqual(await dave.ok("POST", f"/rooms/{q(room)}/join", {}), {"room_id": room})
            for client in (bob, carol, dave):
                self.assertEqual(await membership(alice, room, client.user_id), "join")
                self.assertIn(room, await client.joined_rooms())

    async def test_join_with_reason_puts_it_in_the_member_event(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat")
        await bob.ok("POST", f"/join/{q(room)}", {"reason": "hi all"})
        member = await alice.state(room, "m.room.member", bob.user_id)
        self.assertEqual((member["membership"], member["reason"]), ("join", "hi all"))

    async def test_joining_twice_sends_no_second_event(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat")
        await bob.join(room)
        before = await room_snapshot(alice, room)
        await bob.join(room)
        self.assertEqual(await room_snapshot(alice, room), before)

    async def test_invite_only_room_refuses_uninvited_join_and_changes_nothing(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        for version in ROOM_VERSIONS:
            room = await alice.create_room(room_version=version, preset="private_chat")
            before = await room_snapshot(alice, room)
            for path in (f"/join/{q(room)}", f"/rooms/{q(room)}/join"):
                resp = await bob.call("POST", path, {})
                assert_error(self, resp, 403, "M_FORBIDDEN")
            self.assertEqual(await room_snapshot(alice, room), before)
            self.assertEqual(await bob.joined_rooms(), [])

    async def test_invited_user_joins_invite_only_room(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        for version in ROOM_VERSIONS:
            room = await alice.create_room(room_version=version, preset="private_chat")
            await alice.invite(room, bob.user_id)
            self.assertEqual(await membership(alice, room, bob.user_id), "invite")
            self.assertNotIn(room, await bob.joined_rooms())
            await bob.join(room)
            self.assertEqual(await membership(alice, room, bob.user_id), "join")

    async def test_join_unknown_room_or_alias_is_not_found(self) -> None:
        (alice,) = await start_users(self, "alice")
        for path in (f"/join/{q(UNKNOWN_ROOM)}", f"/join/{q('#nope:' + SERVER)}",
                     f"/rooms/{q(UNKNOWN_ROOM)}/join"):
            resp = await alice.call("POST", path, {})
            assert_error(self, resp, 404, "M_NOT_FOUND")

    async def test_join_of_something_that_is_not_a_room_is_invalid(self) -> None:
        (alice,) = await start_users(self, "alice")
        resp = await alice.call("POST", "/join/not-a-room", {})
        assert_error(self, resp, 400, "M_INVALID_PARAM")

    async def test_join_without_token(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room(preset="public_chat")
        resp = await alice.server.request("POST", f"/_matrix/client/v3/join/{q(room)}", {})
        assert_error(self, resp, 401, "M_MISSING_TOKEN")


class LeaveAndForgetTests(TestCase):
    async def test_leave_removes_the_room_from_joined_rooms(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        for version in ROOM_VERSIONS:
            room = await alice.create_room(room_version=version, preset="public_chat")
            await bob.join(room)
            resp = await bob.call("POST", f"/rooms/{q(room)}/leave", {"reason": "bye"})
            self.assertEqual((resp.status, resp.body), (200, {}))
            member = await alice.state(room, "m.room.member", bob.user_id)
            self.assertEqual((member["membership"], member["reason"]), ("leave", "bye"))
            self.assertNotIn(room, await bob.joined_rooms())

    async def test_invited_user_can_reject_by_leaving(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(invite=[bob.user_id])
        await bob.leave(room)
        self.assertEqual(await membership(alice, room, bob.user_id), "leave")

    async def test_leaving_a_room_you_are_not_in_is_forbidden(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat")
        before = await room_snapshot(alice, room)
        resp = await bob.call("POST", f"/rooms/{q(room)}/leave", {})
        assert_error(self, resp, 403, "M_FORBIDDEN")
        await bob.join(room)
        await bob.leave(room)
        resp = await bob.call("POST", f"/rooms/{q(room)}/leave", {})
        assert_error(self, resp, 403, "M_FORBIDDEN")
        self.assertEqual(len((await room_snapshot(alice, room))[1]), len(before[1]) + 2)

    async def test_leaving_an_unknown_room_is_not_found(self) -> None:
        (alice,) = await start_users(self, "alice")
        resp = await alice.call("POST", f"/rooms/{q(UNKNOWN_ROOM)}/leave", {})
        assert_error(self, resp, 404, "M_NOT_FOUND")

    async def test_forget_needs_the_room_left_first(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat")
        await bob.join(room)
        resp = await bob.call("POST", f"/rooms/{q(room)}/forget", {})
        assert_error(self, resp, 400, "M_UNKNOWN")
        await bob.leave(room)
        self.assertEqual(await bob.ok("POST", f"/rooms/{q(room)}/forget", {}), {})

    async def test_forgotten_room_history_is_no_longer_readable(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat")
        await bob.join(room)
        await alice.send(room, "while bob was here")
        await bob.leave(room)
        self.assertIn("while bob was here", [
            e["content"].get("body") for e in (await bob.messages(room))["chunk"]])
        await bob.ok("POST", f"/rooms/{q(room)}/forget", {})
        resp = await bob.call("GET", f"/rooms/{q(room)}/messages?dir=b")
        assert_error(self, resp, 403, "M_FORBIDDEN")

    async def test_rejoining_unforgets(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat")
        await bob.join(room)
        await bob.leave(room)
        await bob.ok("POST", f"/rooms/{q(room)}/forget", {})
        await bob.join(room)
        self.assertEqual(await bob.joined_rooms(), [room])


class InviteTests(TestCase):
    async def test_invite_and_bad_invite_bodies(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room()
        path = f"/rooms/{q(room)}/invite"
        for raw, errcode in ((b"nope", "M_NOT_JSON"), (b"{}", "M_MISSING_PARAM"),
                             (b'{"user_id": "bob"}', "M_INVALID_PARAM"),
                             (b'{"user_id": 7}', "M_BAD_JSON")):
            resp = await alice.call("POST", path, raw=raw)
            assert_error(self, resp, 400, errcode)
        resp = await target(alice, "invite", room, bob.user_id, reason="come")
        self.assertEqual((resp.status, resp.body), (200, {}))
        member = await alice.state(room, "m.room.member", bob.user_id)
        self.assertEqual(member, {"membership": "invite", "reason": "come"})

    async def test_invite_without_the_invite_level_is_forbidden(self) -> None:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol")
        for version in ROOM_VERSIONS:
            room = await alice.create_room(room_version=version, preset="public_chat",
                                           power_level_content_override={"invite": 50})
            await bob.join(room)
            before = await room_snapshot(alice, room)
            resp = await target(bob, "invite", room, carol.user_id)
            assert_error(self, resp, 403, "M_FORBIDDEN")
            self.assertEqual(await room_snapshot(alice, room), before)

    async def test_non_member_cannot_invite(self) -> None:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol")
        room = await alice.create_room(preset="public_chat")
        resp = await target(bob, "invite", room, carol.user_id)
        assert_error(self, resp, 403, "M_FORBIDDEN")

    async def test_inviting_a_joined_or_banned_user_is_forbidden(self) -> None:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol")
        room = await alice.create_room(preset="public_chat")
        await bob.join(room)
        assert_error(self, await target(alice, "invite", room, bob.user_id), 403, "M_FORBIDDEN")
        await alice.ok("POST", f"/rooms/{q(room)}/ban", {"user_id": carol.user_id})
        assert_error(self, await target(alice, "invite", room, carol.user_id), 403, "M_FORBIDDEN")

    async def test_invite_to_unknown_room_is_not_found(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        assert_error(self, await target(alice, "invite", UNKNOWN_ROOM, bob.user_id),
                     404, "M_NOT_FOUND")


class KickBanTests(TestCase):
    async def _room(self, version: str = "12") -> tuple[Client, Client, Client, str]:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol")
        room = await alice.create_room(room_version=version, preset="public_chat")
        await bob.join(room)
        await carol.join(room)
        return alice, bob, carol, room

    async def test_kick_makes_the_target_leave_with_reason(self) -> None:
        for version in ROOM_VERSIONS:
            alice, bob, _, room = await self._room(version)
            resp = await target(alice, "kick", room, bob.user_id, reason="spam")
            self.assertEqual((resp.status, resp.body), (200, {}))
            state = await alice.ok("GET", f"/rooms/{q(room)}/state/m.room.member/{q(bob.user_id)}"
                                   "?format=event")
            self.assertEqual((state["content"]["membership"], state["content"]["reason"]),
                             ("leave", "spam"))
            self.assertEqual(state["sender"], alice.user_id)
            self.assertNotIn(room, await bob.joined_rooms())
            await bob.join(room)  # a kick is not a ban

    async def test_kick_without_level_or_above_own_level_is_forbidden(self) -> None:
        alice, bob, carol, room = await self._room()
        await alice.put_state(room, "m.room.power_levels", {"users": {bob.user_id: 50}})
        before = await room_snapshot(alice, room)
        assert_error(self, await target(carol, "kick", room, bob.user_id), 403, "M_FORBIDDEN")
        assert_error(self, await target(bob, "kick", room, alice.user_id), 403, "M_FORBIDDEN")
        self.assertEqual(await room_snapshot(alice, room), before)
        await target(bob, "kick", room, carol.user_id)
        self.assertEqual(await membership(alice, room, carol.user_id), "leave")

    async def test_kick_above_level_in_v10_and_v11(self) -> None:
        for version in ("10", "11"):
            alice, bob, carol, room = await self._room(version)
            await alice.put_state(room, "m.room.power_levels",
                                  {"users": {alice.user_id: 100, bob.user_id: 50, carol.user_id: 50}})
            assert_error(self, await target(bob, "kick", room, carol.user_id), 403, "M_FORBIDDEN")
            assert_error(self, await target(bob, "kick", room, alice.user_id), 403, "M_FORBIDDEN")

    async def test_kicking_someone_not_in_the_room_is_forbidden(self) -> None:
        alice, bob, carol, room = await self._room()
        await carol.leave(room)
        before = await room_snapshot(alice, room)
        assert_error(self, await target(alice, "kick", room, carol.user_id), 403, "M_FORBIDDEN")
        assert_error(self, await target(alice, "kick", room, f"@nobody:{SERVER}"), 403, "M_FORBIDDEN")
        self.assertEqual(await room_snapshot(alice, room), before)

    async def test_kick_does_not_lift_a_ban(self) -> None:
        alice, bob, _, room = await self._room()
        await target(alice, "ban", room, bob.user_id)
        assert_error(self, await target(alice, "kick", room, bob.user_id), 403, "M_FORBIDDEN")
        self.assertEqual(await membership(alice, room, bob.user_id), "ban")

    async def test_banned_user_cannot_rejoin_until_unbanned(self) -> None:
        for version in ROOM_VERSIONS:
            alice, bob, _, room = await self._room(version)
            resp = await target(alice, "ban", room, bob.user_id, reason="troll")
            self.assertEqual((resp.status, resp.body), (200, {}))
            member = await alice.state(room, "m.room.member", bob.user_id)
            self.assertEqual(member, {"membership": "ban", "reason": "troll"})
            self.assertEqual(await bob.joined_rooms(), [])
            before = await room_snapshot(alice, room)
            assert_error(self, await bob.call("POST", f"/join/{q(room)}", {}), 403, "M_FORBIDDEN")
            self.assertEqual(await room_snapshot(alice, room), before)
            resp = await target(alice, "unban", room, bob.user_id)
            self.assertEqual((resp.status, resp.body), (200, {}))
            self.assertEqual(await membership(alice, room, bob.user_id), "leave")
            await bob.join(room)

    async def test_ban_someone_never_in_the_room(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat")
        await target(alice, "ban", room, bob.user_id)
        assert_error(self, await bob.call("POST", f"/join/{q(room)}", {}), 403, "M_FORBIDDEN")

    async def test_ban_and_unban_need_the_ban_level(self) -> None:
        alice, bob, carol, room = await self._room()
        assert_error(self, await target(bob, "ban", room, carol.user_id), 403, "M_FORBIDDEN")
        self.assertEqual(await membership(alice, room, carol.user_id), "join")
        await target(alice, "ban", room, carol.user_id)
        assert_error(self, await target(bob, "unban", room, carol.user_id), 403, "M_FORBIDDEN")
        self.assertEqual(await membership(alice, room, carol.user_id), "ban")

    async def test_unban_of_a_user_who_is_not_banned_changes_nothing(self) -> None:
        alice, bob, _, room = await self._room()
        before = await room_snapshot(alice, room)
        assert_error(self, await target(alice, "unban", room, bob.user_id), 403, "M_FORBIDDEN")
        self.assertEqual(await membership(alice, room, bob.user_id), "join")
        self.assertEqual(await room_snapshot(alice, room), before)

    async def test_membership_actions_on_unknown_room_are_not_found(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        for action in ("kick", "ban", "unban"):
            resp = await target(alice, action, UNKNOWN_ROOM, bob.user_id)
            assert_error(self, resp, 404, "M_NOT_FOUND")

    async def test_membership_actions_need_a_user_id(self) -> None:
        alice, _, _, room = await self._room()
        for action in ("kick", "ban", "unban"):
            resp = await alice.call("POST", f"/rooms/{q(room)}/{action}", {})
            assert_error(self, resp, 400, "M_MISSING_PARAM")


class JoinedRoomsTests(TestCase):
    async def test_joined_rooms_lists_only_joined_rooms(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        joined = await alice.create_room(preset="public_chat")
        left = await alice.create_room(preset="public_chat")
        invited = await alice.create_room(invite=[bob.user_id])
        await bob.join(joined)
        await bob.join(left)
        await bob.leave(left)
        self.assertEqual(await bob.joined_rooms(), [joined])
        self.assertEqual(sorted(await alice.joined_rooms()), sorted([joined, left, invited]))
