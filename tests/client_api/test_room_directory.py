"""Room aliases and the published room directory over raw HTTP."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.client_api.test_rooms_http import (
    SERVER,
    V3,
    Client,
    assert_error,
    start_users,
)
from tests.server_harness import q


def alias_path(alias: str) -> str:
    return f"/directory/room/{q(alias)}"


async def put_alias(client: Client, alias: str, room_id: str):  # noqa: ANN201
    return await client.call("PUT", alias_path(alias), {"room_id": room_id})


class AliasTests(TestCase):
    async def test_put_get_delete_alias(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        alias = f"#mine:{SERVER}"
        resp = await put_alias(alice, alias, room)
        self.assertEqual((resp.status, resp.body), (200, {}))
        self.assertEqual(await alice.ok("GET", alias_path(alias)),
                         {"room_id": room, "servers": [SERVER]})
        self.assertEqual(await alice.ok("GET", f"/rooms/{q(room)}/aliases"), {"aliases": [alias]})
        self.assertEqual(await alice.ok("DELETE", alias_path(alias)), {})
        assert_error(self, await alice.call("GET", alias_path(alias)), 404, "M_NOT_FOUND")
        assert_error(self, await alice.call("DELETE", alias_path(alias)), 404, "M_NOT_FOUND")
        self.assertEqual(await alice.ok("GET", f"/rooms/{q(room)}/aliases"), {"aliases": []})

    async def test_alias_lookup_needs_no_token(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room(room_alias_name="open")
        resp = await alice.server.request("GET", V3 + alias_path(f"#open:{SERVER}"))
        self.assertEqual((resp.status, resp.body["room_id"]), (200, room))

    async def test_taken_alias_is_a_conflict(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        first = await alice.create_room(room_alias_name="taken")
        other = await bob.create_room()
        assert_error(self, await put_alias(bob, f"#taken:{SERVER}", other), 409, "M_UNKNOWN")
        self.assertEqual((await alice.ok("GET", alias_path(f"#taken:{SERVER}")))["room_id"], first)

    async def test_invalid_or_foreign_alias_is_invalid_param(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        for alias in ("nohash:test.roost", "#nocolon", "#x:other.server", "#sp ace:test.roost",
                      "#" + "a" * 300 + ":test.roost"):
            assert_error(self, await put_alias(alice, alias, room), 400, "M_INVALID_PARAM")

    async def test_put_alias_bad_bodies(self) -> None:
        (alice,) = await start_users(self, "alice")
        path = alias_path(f"#a:{SERVER}")
        resp = await alice.call("PUT", path, raw=b"nope")
        assert_error(self, resp, 400, "M_NOT_JSON")
        resp = await alice.call("PUT", path, {})
        self.assertEqual(resp.status, 400, resp.body)

    async def test_alias_for_unknown_room_or_room_not_joined(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room()
        assert_error(self, await put_alias(alice, f"#x:{SERVER}", f"!nope:{SERVER}"), 404, "M_NOT_FOUND")
        assert_error(self, await put_alias(bob, f"#x:{SERVER}", room), 403, "M_FORBIDDEN")
        assert_error(self, await alice.call("GET", alias_path(f"#x:{SERVER}")), 404, "M_NOT_FOUND")

    async def test_delete_by_others_needs_power_in_the_room(self) -> None:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol")
        room = await alice.create_room(preset="public_chat")
        await bob.join(room)
        await carol.join(room)
        await put_alias(bob, f"#bobs:{SERVER}", room)
        resp = await carol.call("DELETE", alias_path(f"#bobs:{SERVER}"))
        assert_error(self, resp, 403, "M_FORBIDDEN")
        self.assertEqual((await carol.ok("GET", alias_path(f"#bobs:{SERVER}")))["room_id"], room)
        self.assertEqual(await alice.ok("DELETE", alias_path(f"#bobs:{SERVER}")), {})

    async def test_room_aliases_for_non_members(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        private = await alice.create_room(room_alias_name="priv")
        readable = await alice.create_room(room_alias_name="wr", initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}])
        assert_error(self, await bob.call("GET", f"/rooms/{q(private)}/aliases"), 403, "M_FORBIDDEN")
        self.assertEqual(await bob.ok("GET", f"/rooms/{q(readable)}/aliases"),
                         {"aliases": [f"#wr:{SERVER}"]})


class CanonicalAliasTests(TestCase):
    async def test_canonical_alias_event_can_be_set_and_read(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        await put_alias(alice, f"#main:{SERVER}", room)
        await put_alias(alice, f"#alt:{SERVER}", room)
        content = {"alias": f"#main:{SERVER}", "alt_aliases": [f"#alt:{SERVER}"]}
        await alice.put_state(room, "m.room.canonical_alias", content)
        self.assertEqual(await alice.state(room, "m.room.canonical_alias"), content)
        await alice.put_state(room, "m.room.canonical_alias", {})  # removing is always allowed

    async def test_canonical_alias_with_bad_syntax_is_invalid_param(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        path = f"/rooms/{q(room)}/state/m.room.canonical_alias/"
        for content in ({"alias": "not-an-alias"}, {"alt_aliases": ["#ok:test.roost", "bad"]},
                        {"alt_aliases": "#x:test.roost"}, {"alias": 5}):
            assert_error(self, await alice.call("PUT", path, content), 400, "M_INVALID_PARAM")

    async def test_canonical_alias_must_point_to_the_room(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        other = await alice.create_room(room_alias_name="elsewhere")
        path = f"/rooms/{q(room)}/state/m.room.canonical_alias/"
        resp = await alice.call("PUT", path, {"alias": f"#elsewhere:{SERVER}"})
        assert_error(self, resp, 400, "M_BAD_ALIAS")
        resp = await alice.call("PUT", path, {"alias": f"#missing:{SERVER}"})
        assert_error(self, resp, 400, "M_BAD_ALIAS")
        self.assertNotEqual(other, room)


class PublicRoomsTests(TestCase):
    async def _rooms(self) -> tuple[Client, Client, list[str]]:
        alice, bob = await start_users(self, "alice", "bob")
        big = await alice.create_room(visibility="public", name="Big Room", topic="lots of people",
                                      room_alias_name="big")
        await bob.join(big)
        small = await alice.create_room(visibility="public", name="Small Room")
        wr = await alice.create_room(visibility="public", name="Readable", initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}},
            {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}}])
        await alice.create_room(name="Private Room")
        return alice, bob, [big, small, wr]

    async def test_public_rooms_lists_published_rooms_with_their_details(self) -> None:
        alice, _, (big, small, wr) = await self._rooms()
        resp = await alice.server.request("GET", V3 + "/publicRooms")  # no token needed
        self.assertEqual(resp.status, 200, resp.body)
        chunk = resp.body["chunk"]
        self.assertEqual(resp.body["total_room_count_estimate"], 3)
        self.assertEqual(chunk[0]["room_id"], big)  # most members first
        self.assertEqual(chunk[0], {
            "room_id": big, "num_joined_members": 2, "world_readable": False,
            "guest_can_join": False, "join_rule": "public", "name": "Big Room",
            "topic": "lots of people", "canonical_alias": f"#big:{SERVER}"})
        by_id = {r["room_id"]: r for r in chunk}
        self.assertEqual(set(by_id), {big, small, wr})
        self.assertTrue(by_id[wr]["world_readable"])
        self.assertTrue(by_id[wr]["guest_can_join"])

    async def test_public_rooms_pages_with_limit_and_since(self) -> None:
        alice, _, ids = await self._rooms()
        first = await alice.ok("GET", "/publicRooms?limit=2")
        self.assertEqual(len(first["chunk"]), 2)
        self.assertNotIn("prev_batch", first)
        second = await alice.ok("GET", f"/publicRooms?limit=2&since={q(first['next_batch'])}")
        self.assertEqual(len(second["chunk"]), 1)
        self.assertNotIn("next_batch", second)
        self.assertIn("prev_batch", second)
        seen = [r["room_id"] for r in first["chunk"] + second["chunk"]]
        self.assertEqual(sorted(seen), sorted(ids))
        posted = await alice.ok("POST", "/publicRooms", {"limit": 2, "since": first["next_batch"]})
        self.assertEqual(posted["chunk"], second["chunk"])

    async def test_public_rooms_search_filter(self) -> None:
        alice, _, (big, small, _) = await self._rooms()
        for term, expected in (("small", [small]), ("LOTS OF", [big]), ("#big", [big]),
                               ("nothing like it", [])):
            found = await alice.ok("POST", "/publicRooms", {"filter": {"generic_search_term": term}})
            self.assertEqual([r["room_id"] for r in found["chunk"]], expected, term)

    async def test_post_public_rooms_needs_token_and_json(self) -> None:
        (alice,) = await start_users(self, "alice")
        resp = await alice.server.request("POST", V3 + "/publicRooms", {})
        assert_error(self, resp, 401, "M_MISSING_TOKEN")
        assert_error(self, await alice.call("POST", "/publicRooms", raw=b"{"), 400, "M_NOT_JSON")
        for body in ({"limit": "x"}, {"filter": "x"}, {"since": 5}):
            resp = await alice.call("POST", "/publicRooms", body)
            self.assertEqual(resp.status, 400, (body, resp.body))

    async def test_directory_visibility_get_and_put(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat")
        path = f"/directory/list/room/{q(room)}"
        self.assertEqual(await alice.ok("GET", path), {"visibility": "private"})
        self.assertEqual(await alice.ok("PUT", path, {"visibility": "public"}), {})
        resp = await alice.server.request("GET", V3 + path)
        self.assertEqual(resp.body, {"visibility": "public"})
        self.assertEqual([r["room_id"] for r in (await alice.ok("GET", "/publicRooms"))["chunk"]],
                         [room])
        await bob.join(room)
        assert_error(self, await bob.call("PUT", path, {"visibility": "private"}), 403, "M_FORBIDDEN")
        self.assertEqual(await alice.ok("GET", path), {"visibility": "public"})
        await alice.ok("PUT", path, {"visibility": "private"})
        self.assertEqual((await alice.ok("GET", "/publicRooms"))["chunk"], [])

    async def test_directory_visibility_errors(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room()
        unknown = f"/directory/list/room/{q('!nope:' + SERVER)}"
        assert_error(self, await alice.call("GET", unknown), 404, "M_NOT_FOUND")
        assert_error(self, await alice.call("PUT", unknown, {"visibility": "public"}), 404, "M_NOT_FOUND")
        path = f"/directory/list/room/{q(room)}"
        assert_error(self, await alice.call("PUT", path, {"visibility": "secret"}), 400, "M_INVALID_PARAM")
        assert_error(self, await bob.call("PUT", path, {"visibility": "public"}), 403, "M_FORBIDDEN")
        self.assertEqual(await alice.ok("GET", path), {"visibility": "private"})
