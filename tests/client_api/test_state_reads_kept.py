"""/members and an initial sync's `state` after the room changed: what the room head keeps
loaded (RoomHead.loaded_state) must never be served stale.

Each test reads once (which fills the kept state), changes the room (a redaction of a
member event, a leave, a new displayname), and reads again: the second read must show
the change, as a server that keeps nothing would.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from tests.client_api.sync_helpers import frozen_clock
from tests.client_api.test_rooms_http import Client, start_users
from tests.server_harness import q


async def members(client: Client, room: str, query: str = "") -> dict[str, dict[str, Any]]:
    chunk = (await client.ok("GET", f"/rooms/{q(room)}/members{query}"))["chunk"]
    ids = [e["event_id"] for e in chunk]
    assert ids == sorted(ids), "members are served in event id order"
    return {e["state_key"]: e for e in chunk}


LAST_ONLY = '{"room":{"timeline":{"limit":1}}}'


async def sync_state(client: Client, room: str, filter_json: str = LAST_ONLY) -> dict[str, Any]:
    """The member events of the room's `state` in an initial sync (by state key); by
    default with a timeline of the last event only."""
    path = "/sync" + (f"?filter={q(filter_json)}" if filter_json else "")
    body = await client.ok("GET", path)
    events = body["rooms"]["join"][room]["state"]["events"]
    return {e["state_key"]: e for e in events if e["type"] == "m.room.member"}


class KeptStateTests(TestCase):
    async def _room(self) -> tuple[list[Client], str]:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol")
        room = await alice.create_room(preset="public_chat")
        await bob.join(room)
        await bob.put_state(room, "m.room.member",
                            {"membership": "join", "displayname": "Bob"}, bob.user_id)
        await carol.join(room)
        return [alice, bob, carol], room

    async def test_members_after_a_member_event_is_redacted(self) -> None:
        (alice, bob, carol), room = await self._room()
        before = await members(carol, room)
        self.assertEqual(before[bob.user_id]["content"]["displayname"], "Bob")
        target = before[bob.user_id]["event_id"]
        redaction = (await alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(target)}/r1",
                                    {"reason": "rude"}))["event_id"]
        after = await members(carol, room)
        self.assertEqual(after[bob.user_id]["content"], {"membership": "join"})
        because = after[bob.user_id]["unsigned"]["redacted_because"]
        self.assertEqual(because["event_id"], redaction)
        self.assertNotIn("redacted_because", after[alice.user_id]["unsigned"])

    async def test_members_after_a_member_leaves_and_renames(self) -> None:
        (alice, bob, carol), room = await self._room()
        await members(alice, room)
        await members(alice, room, "?membership=join")
        await bob.leave(room)
        await carol.put_state(room, "m.room.member",
                              {"membership": "join", "displayname": "Carol"}, carol.user_id)
        after = await members(alice, room)
        self.assertEqual(after[bob.user_id]["content"]["membership"], "leave")
        self.assertEqual(after[carol.user_id]["content"]["displayname"], "Carol")
        joined = await members(alice, room, "?membership=join")
        self.assertEqual(set(joined), {alice.user_id, carol.user_id})
        not_left = await members(alice, room, "?not_membership=join")
        self.assertEqual(set(not_left), {bob.user_id})

    async def test_a_departed_member_reads_members_as_they_left(self) -> None:
        (alice, bob, carol), room = await self._room()
        await members(alice, room)
        await bob.leave(room)
        await members(bob, room)  # the state at bob's leave is the current state here
        await carol.leave(room)
        seen = await members(bob, room)
        self.assertEqual(seen[carol.user_id]["content"]["membership"], "join")
        self.assertEqual(seen[bob.user_id]["content"]["membership"], "leave")
        now = await members(alice, room)
        self.assertEqual(now[carol.user_id]["content"]["membership"], "leave")

    async def test_initial_sync_after_a_redaction_and_a_leave(self) -> None:
        (alice, bob, carol), room = await self._room()
        before = await sync_state(carol, room)
        self.assertEqual(before[bob.user_id]["content"]["displayname"], "Bob")
        target = before[bob.user_id]["event_id"]
        await alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(target)}/r1", {})
        await alice.send(room)
        after = await sync_state(carol, room)
        self.assertEqual(after[bob.user_id]["content"], {"membership": "join"})
        self.assertIn("redacted_because", after[bob.user_id]["unsigned"])
        await bob.leave(room)
        await alice.send(room)
        for _ in range(2):  # the second from what the first kept
            last = await sync_state(carol, room)
            self.assertEqual(last[bob.user_id]["content"]["membership"], "leave")
            self.assertNotIn("redacted_because", last[bob.user_id]["unsigned"])

    async def test_initial_sync_state_leaves_out_the_timeline_and_follows_filters(self) -> None:
        (alice, bob, carol), room = await self._room()
        full = await sync_state(carol, room)
        # carol's join is the timeline's last event: not in `state` as well.
        self.assertNotIn(carol.user_id, full)
        self.assertEqual(set(full), {alice.user_id, bob.user_id})
        lazy = await sync_state(carol, room, '{"room":{"state":{"lazy_load_members":true},'
                                             '"timeline":{"limit":1}}}')
        self.assertEqual(set(lazy), set())
        default = await sync_state(carol, room, "")  # every event is in the timeline
        self.assertEqual(set(default), set())
        await alice.send(room)
        wide = await sync_state(carol, room)
        self.assertEqual(set(wide), {alice.user_id, bob.user_id, carol.user_id})
        no_members = await sync_state(
            carol, room, '{"room":{"state":{"not_types":["m.room.member"]}}}')
        self.assertEqual(no_members, {})

    async def test_members_equal_the_state_read_from_storage(self) -> None:
        """Byte for byte (on a frozen clock): /members from the kept state against /state's
        member events of a small room, which /state reads from storage."""
        alice, bob, carol = await start_users(self, "alice", "bob", "carol", clock=frozen_clock())
        room = await alice.create_room(preset="public_chat")
        for user in (bob, carol):
            await user.join(room)
        await members(alice, room)
        # `%` in an event: the kept encoding formats the ages in (EncodedEvents).
        await carol.put_state(room, "m.room.member",
                              {"membership": "join", "displayname": "100% %d %s %%b"},
                              carol.user_id)
        for _ in range(2):
            chunk = await self._same_as_state(alice, room)
        self.assertIn("100% %d %s %%b", [e["content"].get("displayname") for e in chunk])
        target = (await members(alice, room))[bob.user_id]["event_id"]
        await alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(target)}/r1", {"reason": "x"})
        await carol.leave(room)
        for _ in range(2):
            chunk = await self._same_as_state(alice, room)
            self.assertIn("redacted_because", next(
                e for e in chunk if e["state_key"] == bob.user_id)["unsigned"])

    async def _same_as_state(self, client: Client, room: str) -> list[dict[str, Any]]:
        resp = await client.call("GET", f"/rooms/{q(room)}/members")
        self.assertEqual(resp.status, 200, resp.body)
        state = await client.ok("GET", f"/rooms/{q(room)}/state")
        expected = sorted((e for e in state if e["type"] == "m.room.member"),
                          key=lambda e: e["event_id"])
        self.assertEqual(resp.body["chunk"], expected)
        return list(resp.body["chunk"])

    async def test_initial_sync_state_equals_the_filtered_path(self) -> None:
        """Byte for byte (on a frozen clock): an unfiltered initial sync's `state` (the
        kept, encoded whole state) against one whose filter passes every event in this
        room but takes the per-event path, before and after a change."""
        alice, bob, carol = await start_users(self, "alice", "bob", "carol", clock=frozen_clock())
        room = await alice.create_room(preset="public_chat")
        for user in (bob, carol):
            await user.join(room)
        await bob.put_state(room, "m.room.member",
                            {"membership": "join", "displayname": "50% %d"}, bob.user_id)
        await alice.send(room)
        other = '{"room":{"timeline":{"limit":1},"state":{"not_types":["org.example.none"]}}}'

        wide = '{"room":{"timeline":{"limit":4}}}'
        wide_other = '{"room":{"timeline":{"limit":4},"state":{"not_types":["org.example.n"]}}}'

        async def compare() -> dict[str, Any]:
            for _ in range(2):  # two timelines of one head: each its own encoding
                kept = await sync_state(carol, room)
                self.assertEqual(kept, await sync_state(carol, room, other))
                self.assertEqual(await sync_state(carol, room, wide),
                                 await sync_state(carol, room, wide_other))
            return kept

        self.assertEqual((await compare())[bob.user_id]["content"]["displayname"], "50% %d")
        target = (await compare())[bob.user_id]["event_id"]
        await alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(target)}/r1", {})
        await alice.send(room)
        self.assertIn("redacted_because", (await compare())[bob.user_id]["unsigned"])
        await bob.leave(room)
        await alice.send(room)
        self.assertEqual((await compare())[bob.user_id]["content"]["membership"], "leave")

    async def test_a_message_keeps_the_state_and_a_redaction_of_it_does_not(self) -> None:
        """Messages hand the kept state on to the next head (the same state, served the
        same); a redaction of a member event after them is still seen."""
        alice, bob = await start_users(self, "alice", "bob", clock=frozen_clock())
        room = await alice.create_room(preset="public_chat")
        await bob.join(room)
        engine = alice.server.hs.engine
        first = (await engine.current_states_ready([room]))[room][1]
        self.assertIsNotNone(first)
        await members(alice, room)
        await alice.send(room)
        self.assertIs((await engine.current_states_ready([room]))[room][1], first)
        target = (await members(alice, room))[bob.user_id]["event_id"]
        await alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(target)}/r1", {})
        await alice.send(room)
        self.assertIn("redacted_because", (await members(alice, room))[bob.user_id]["unsigned"])
        other = '{"room":{"timeline":{"limit":1},"state":{"not_types":["x.n"]}}}'
        self.assertEqual(await sync_state(alice, room), await sync_state(alice, room, other))
