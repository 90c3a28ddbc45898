"""Relations over raw HTTP: edits, /relations with pagination, threads, reactions."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from tests.client_api.test_rooms_http import (
    ROOM_VERSIONS,
    V1,
    Client,
    assert_error,
    start_users,
)
from tests.server_harness import q


def relation(rel_type: str, target: str, **extra: Any) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": rel_type, "event_id": target, **extra}}


async def edit(client: Client, room_id: str, target: str, text: str) -> str:
    content = {"msgtype": "m.text", "body": f"* {text}",
               "m.new_content": {"msgtype": "m.text", "body": text}, **relation("m.replace", target)}
    return await client.send(room_id, content=content)


async def react(client: Client, room_id: str, target: str, key: str) -> str:
    return await client.send(room_id, event_type="m.reaction",
                             content=relation("m.annotation", target, key=key))


async def reply_in_thread(client: Client, room_id: str, root: str, text: str) -> str:
    content = {"msgtype": "m.text", "body": text, **relation("m.thread", root, is_falling_back=True)}
    return await client.send(room_id, content=content)


def relations_path(room_id: str, target: str, *rest: str) -> str:
    tail = "".join("/" + q(part) for part in rest)
    return f"{V1}/rooms/{q(room_id)}/relations/{q(target)}{tail}"


async def unsigned_relations(client: Client, room_id: str, event_id: str) -> dict[str, Any]:
    event = (await client.event(room_id, event_id)).body
    return event["unsigned"].get("m.relations", {})


async def three_in_a_room(testcase: TestCase, version: str = "12") -> tuple[Client, Client, Client, str]:
    alice, bob, carol = await start_users(testcase, "alice", "bob", "carol")
    room = await alice.create_room(room_version=version, preset="public_chat")
    await bob.join(room)
    await carol.join(room)
    return alice, bob, carol, room


class EditTests(TestCase):
    async def test_latest_edit_is_served_with_the_original(self) -> None:
        for version in ROOM_VERSIONS:
            alice, _, _, room = await three_in_a_room(self, version)
            original = await alice.send(room, "tpyo")
            await edit(alice, room, original, "typo?")
            latest = await edit(alice, room, original, "typo")
            replace = (await unsigned_relations(alice, room, original))["m.replace"]
            self.assertEqual(replace["event_id"], latest)
            self.assertEqual(replace["content"]["m.new_content"]["body"], "typo")
            self.assertEqual(replace["sender"], alice.user_id)
            in_messages = [e for e in (await alice.messages(room, limit=10))["chunk"]
                           if e["event_id"] == original][0]
            self.assertEqual(in_messages["unsigned"]["m.relations"]["m.replace"]["event_id"], latest)

    async def test_edits_by_someone_else_are_ignored(self) -> None:
        alice, bob, _, room = await three_in_a_room(self)
        original = await alice.send(room, "mine")
        await edit(bob, room, original, "hijacked")
        self.assertNotIn("m.replace", await unsigned_relations(alice, room, original))

    async def test_redacted_edit_falls_back_to_the_previous_one(self) -> None:
        alice, _, _, room = await three_in_a_room(self)
        original = await alice.send(room, "one")
        first = await edit(alice, room, original, "two")
        second = await edit(alice, room, original, "three")
        await alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(second)}/r", {})
        replace = (await unsigned_relations(alice, room, original))["m.replace"]
        self.assertEqual(replace["event_id"], first)

    async def test_redacted_original_carries_no_relations(self) -> None:
        alice, _, _, room = await three_in_a_room(self)
        original = await alice.send(room, "one")
        await edit(alice, room, original, "two")
        await alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(original)}/r", {})
        self.assertEqual(await unsigned_relations(alice, room, original), {})


class RelationsEndpointTests(TestCase):
    async def _related(self) -> tuple[Client, Client, str, str, list[str]]:
        alice, bob, carol, room = await three_in_a_room(self)
        target = await alice.send(room, "target")
        ids = [
            await react(bob, room, target, "👍"),
            await edit(alice, room, target, "edited"),
            await react(carol, room, target, "🎉"),
            await reply_in_thread(bob, room, target, "in thread"),
            await react(alice, room, target, "👍"),
        ]
        await alice.send(room, "unrelated")
        return alice, carol, room, target, ids

    async def test_all_relations_newest_first(self) -> None:
        alice, _, room, target, ids = await self._related()
        body = await alice.ok("GET", relations_path(room, target))
        self.assertEqual([e["event_id"] for e in body["chunk"]], list(reversed(ids)))
        self.assertNotIn("next_batch", body)

    async def test_filter_by_rel_type_and_event_type(self) -> None:
        alice, _, room, target, ids = await self._related()
        annotations = await alice.ok("GET", relations_path(room, target, "m.annotation"))
        self.assertEqual([e["event_id"] for e in annotations["chunk"]], [ids[4], ids[2], ids[0]])
        typed = await alice.ok("GET", relations_path(room, target, "m.annotation", "m.reaction"))
        self.assertEqual(len(typed["chunk"]), 3)
        none = await alice.ok("GET", relations_path(room, target, "m.annotation", "m.room.message"))
        self.assertEqual(none["chunk"], [])
        threads = await alice.ok("GET", relations_path(room, target, "m.thread"))
        self.assertEqual([e["event_id"] for e in threads["chunk"]], [ids[3]])

    async def test_pagination_in_both_directions(self) -> None:
        alice, _, room, target, ids = await self._related()
        first = await alice.ok("GET", relations_path(room, target) + "?limit=2")
        self.assertEqual([e["event_id"] for e in first["chunk"]], [ids[4], ids[3]])
        rest = await alice.ok("GET", relations_path(room, target) + f"?limit=10&from={first['next_batch']}")
        self.assertEqual([e["event_id"] for e in rest["chunk"]], [ids[2], ids[1], ids[0]])
        self.assertNotIn("next_batch", rest)
        forward = await alice.ok("GET", relations_path(room, target) + "?dir=f&limit=3")
        self.assertEqual([e["event_id"] for e in forward["chunk"]], ids[:3])
        tail = await alice.ok("GET", relations_path(room, target)
                              + f"?dir=f&limit=3&from={forward['next_batch']}")
        self.assertEqual([e["event_id"] for e in tail["chunk"]], ids[3:])

    async def test_relations_errors(self) -> None:
        alice, _, room, target, _ = await self._related()
        (dave,) = [await _other_user(alice, "dave")]
        assert_error(self, await alice.call("GET", relations_path(room, "$nope")), 404, "M_NOT_FOUND")
        assert_error(self, await dave.call("GET", relations_path(room, target)), 404, "M_NOT_FOUND")
        resp = await alice.call("GET", relations_path(room, target) + "?dir=x")
        assert_error(self, resp, 400, "M_INVALID_PARAM")
        resp = await alice.call("GET", relations_path(room, target) + "?from=garbage")
        assert_error(self, resp, 400, "M_INVALID_PARAM")


async def _other_user(client: Client, name: str) -> Client:
    login = await client.server.register(name)
    return Client(client.server, login["user_id"], login["access_token"], login["device_id"])


class ThreadTests(TestCase):
    async def test_thread_summary_on_the_root(self) -> None:
        for version in ROOM_VERSIONS:
            alice, bob, carol, room = await three_in_a_room(self, version)
            root = await alice.send(room, "root")
            await reply_in_thread(bob, room, root, "one")
            last = await reply_in_thread(bob, room, root, "two")
            summary = (await unsigned_relations(carol, room, root))["m.thread"]
            self.assertEqual(summary["count"], 2)
            self.assertEqual(summary["latest_event"]["event_id"], last)
            self.assertFalse(summary["current_user_participated"])
            mine = (await unsigned_relations(alice, room, root))["m.thread"]
            self.assertTrue(mine["current_user_participated"])  # she wrote the root

    async def test_threads_list_most_recent_first_with_participation(self) -> None:
        alice, bob, carol, room = await three_in_a_room(self)
        old = await alice.send(room, "old root")
        new = await bob.send(room, "new root")
        await reply_in_thread(carol, room, old, "a")
        await reply_in_thread(alice, room, new, "b")
        await alice.send(room, "not a thread")
        path = f"{V1}/rooms/{q(room)}/threads"
        chunk = (await alice.ok("GET", path))["chunk"]
        self.assertEqual([e["event_id"] for e in chunk], [new, old])
        self.assertEqual(chunk[0]["unsigned"]["m.relations"]["m.thread"]["count"], 1)
        carols = (await carol.ok("GET", path + "?include=participated"))["chunk"]
        self.assertEqual([e["event_id"] for e in carols], [old])
        bobs = (await bob.ok("GET", path + "?include=participated"))["chunk"]
        self.assertEqual([e["event_id"] for e in bobs], [new])

    async def test_threads_list_pagination(self) -> None:
        alice, _, _, room = await three_in_a_room(self)
        roots = [await alice.send(room, f"root {i}") for i in range(3)]
        for root in roots:
            await reply_in_thread(alice, room, root, "reply")
        path = f"{V1}/rooms/{q(room)}/threads"
        first = await alice.ok("GET", path + "?limit=2")
        self.assertEqual([e["event_id"] for e in first["chunk"]], [roots[2], roots[1]])
        rest = await alice.ok("GET", path + f"?limit=2&from={first['next_batch']}")
        self.assertEqual([e["event_id"] for e in rest["chunk"]], [roots[0]])
        self.assertNotIn("next_batch", rest)

    async def test_threads_list_errors(self) -> None:
        alice, _, _, room = await three_in_a_room(self)
        dave = await _other_user(alice, "dave")
        path = f"{V1}/rooms/{q(room)}/threads"
        assert_error(self, await alice.call("GET", path + "?include=mine"), 400, "M_INVALID_PARAM")
        private = await alice.create_room()
        assert_error(self, await dave.call("GET", f"{V1}/rooms/{q(private)}/threads"), 403, "M_FORBIDDEN")


class ReactionTests(TestCase):
    async def test_reactions_are_counted_per_key(self) -> None:
        for version in ROOM_VERSIONS:
            alice, bob, carol, room = await three_in_a_room(self, version)
            target = await alice.send(room, "react to me")
            await react(alice, room, target, "👍")
            await react(bob, room, target, "👍")
            await react(carol, room, target, "🎉")
            chunk = (await unsigned_relations(bob, room, target))["m.annotation"]["chunk"]
            self.assertEqual(chunk, [{"type": "m.reaction", "key": "👍", "count": 2},
                                     {"type": "m.reaction", "key": "🎉", "count": 1}])

    async def test_redacted_reaction_is_not_counted(self) -> None:
        alice, bob, _, room = await three_in_a_room(self)
        target = await alice.send(room, "x")
        reaction = await react(bob, room, target, "👍")
        await react(alice, room, target, "👍")
        await bob.ok("PUT", f"/rooms/{q(room)}/redact/{q(reaction)}/r", {})
        chunk = (await unsigned_relations(alice, room, target))["m.annotation"]["chunk"]
        self.assertEqual(chunk, [{"type": "m.reaction", "key": "👍", "count": 1}])

    async def test_duplicate_annotation_is_refused(self) -> None:
        alice, bob, _, room = await three_in_a_room(self)
        target = await alice.send(room, "x")
        first = await bob.send(room, event_type="m.reaction", txn="react1",
                               content=relation("m.annotation", target, key="👍"))
        retried = await bob.send(room, event_type="m.reaction", txn="react1",
                                 content=relation("m.annotation", target, key="👍"))
        self.assertEqual(retried, first)  # a retried transaction is not a duplicate
        resp = await bob.call("PUT", f"/rooms/{q(room)}/send/m.reaction/dup",
                              relation("m.annotation", target, key="👍"))
        assert_error(self, resp, 400, "M_DUPLICATE_ANNOTATION")
        await bob.ok("PUT", f"/rooms/{q(room)}/redact/{q(first)}/r", {})
        await react(bob, room, target, "👍")  # allowed again once the first is redacted
