"""The client room API over raw HTTP: createRoom and room state.

The shared helpers live here too (`Client`, `start_users`, `assert_error`);
the other room test modules (test_room_membership, test_room_messages,
test_room_directory, test_room_relations) import them. Every status code and
errcode asserted is the one the Matrix spec gives for the endpoint.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from twisted.trial.unittest import TestCase

from tests.server_harness import Response, RunningServer, q, start_server

V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"
ROOM_VERSIONS = ("10", "11", "12")
SERVER = "test.roost"
_txn_ids = itertools.count(1)


def uid(name: str) -> str:
    return f"@{name}:{SERVER}"


def _url(path: str) -> str:
    return path if path.startswith("/_matrix") else V3 + path


@dataclass
class Client:
    """One logged-in device of one user, speaking raw HTTP."""

    server: RunningServer
    user_id: str
    token: str
    device_id: str

    async def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Response:
        return await self.server.request(method, _url(path), body, token=self.token, raw=raw)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        resp = await self.call(method, path, body)
        if resp.status != 200:
            raise AssertionError(f"{method} {path} -> {resp.status} {resp.body}")
        return resp.body

    async def create_room(self, **body: Any) -> str:
        return (await self.ok("POST", "/createRoom", body))["room_id"]

    async def send(self, room_id: str, body: str = "hello", event_type: str = "m.room.message",
                   content: dict[str, Any] | None = None, txn: str | None = None) -> str:
        content = content if content is not None else {"msgtype": "m.text", "body": body}
        txn = txn or f"t{next(_txn_ids)}"
        path = f"/rooms/{q(room_id)}/send/{q(event_type)}/{txn}"
        return (await self.ok("PUT", path, content))["event_id"]

    async def put_state(self, room_id: str, event_type: str, content: dict[str, Any],
                        state_key: str = "") -> str:
        path = f"/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}"
        return (await self.ok("PUT", path, content))["event_id"]

    async def state(self, room_id: str, event_type: str, state_key: str = "") -> Any:
        return await self.ok("GET", f"/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}")

    async def join(self, room: str) -> Any:
        return await self.ok("POST", f"/join/{q(room)}", {})

    async def leave(self, room_id: str) -> Any:
        return await self.ok("POST", f"/rooms/{q(room_id)}/leave", {})

    async def invite(self, room_id: str, user_id: str) -> Any:
        return await self.ok("POST", f"/rooms/{q(room_id)}/invite", {"user_id": user_id})

    async def messages(self, room_id: str, **args: Any) -> Any:
        args.setdefault("dir", "b")
        query = "&".join(f"{k}={q(str(v))}" for k, v in args.items())
        return await self.ok("GET", f"/rooms/{q(room_id)}/messages?{query}")

    async def event(self, room_id: str, event_id: str) -> Response:
        return await self.call("GET", f"/rooms/{q(room_id)}/event/{q(event_id)}")

    async def joined_rooms(self) -> list[str]:
        return (await self.ok("GET", "/joined_rooms"))["joined_rooms"]

    async def login_again(self) -> Client:
        """A second device of the same user."""
        body = {"type": "m.login.password", "password": "hunter2-pw",
                "identifier": {"type": "m.id.user", "user": self.user_id}}
        resp = await self.server.request("POST", V3 + "/login", body)
        assert resp.status == 200, resp.body
        return Client(self.server, self.user_id, resp.body["access_token"], resp.body["device_id"])


async def start_users(testcase: TestCase, *names: str, **overrides: Any) -> list[Client]:
    """A fresh homeserver with one logged-in client per name."""
    server = await start_server(testcase, **overrides)
    clients = []
    for name in names:
        login = await server.register(name)
        clients.append(Client(server, login["user_id"], login["access_token"], login["device_id"]))
    return clients


def assert_error(testcase: TestCase, resp: Response, status: int, errcode: str) -> None:
    body = resp.body if isinstance(resp.body, dict) else {}
    testcase.assertEqual((resp.status, body.get("errcode")), (status, errcode), resp.body)
    testcase.assertIsInstance(body.get("error"), str)


async def count_rows(server: RunningServer, table: str) -> int:
    row = await server.hs.db.run("count", lambda t: t.query_one(f"SELECT COUNT(*) FROM {table}"))
    assert row is not None
    return int(row[0])


def bodies(chunk: list[dict[str, Any]]) -> list[str]:
    """The text bodies of the m.room.message events in a chunk, in order."""
    return [e["content"].get("body") for e in chunk if e["type"] == "m.room.message"]


async def room_snapshot(client: Client, room_id: str) -> tuple[Any, Any]:
    """The room's state and latest events, to show that a refused request changed nothing."""
    state = await client.ok("GET", f"/rooms/{q(room_id)}/state")
    latest = await client.messages(room_id, limit=50)
    key = sorted((e["type"], e.get("state_key"), e["event_id"]) for e in state)
    return key, [e["event_id"] for e in latest["chunk"]]


async def state_map(client: Client, room_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    events = await client.ok("GET", f"/rooms/{q(room_id)}/state")
    return {(e["type"], e["state_key"]): e for e in events}


class CreateRoomPresetTests(TestCase):
    async def test_private_chat_preset_state(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room(preset="private_chat")
        state = await state_map(alice, room)
        self.assertEqual(state[("m.room.join_rules", "")]["content"], {"join_rule": "invite"})
        self.assertEqual(state[("m.room.history_visibility", "")]["content"],
                         {"history_visibility": "shared"})
        self.assertEqual(state[("m.room.guest_access", "")]["content"], {"guest_access": "can_join"})
        self.assertEqual(state[("m.room.member", alice.user_id)]["content"]["membership"], "join")

    async def test_public_chat_preset_state(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room(preset="public_chat")
        state = await state_map(alice, room)
        self.assertEqual(state[("m.room.join_rules", "")]["content"], {"join_rule": "public"})
        self.assertEqual(state[("m.room.history_visibility", "")]["content"],
                         {"history_visibility": "shared"})
        self.assertEqual(state[("m.room.guest_access", "")]["content"], {"guest_access": "forbidden"})

    async def test_no_preset_follows_visibility(self) -> None:
        (alice,) = await start_users(self, "alice")
        public = await alice.create_room(visibility="public")
        private = await alice.create_room()
        self.assertEqual((await alice.state(public, "m.room.join_rules"))["join_rule"], "public")
        self.assertEqual((await alice.state(private, "m.room.join_rules"))["join_rule"], "invite")

    async def test_unknown_preset_is_refused_and_nothing_created(self) -> None:
        (alice,) = await start_users(self, "alice")
        resp = await alice.call("POST", "/createRoom", {"preset": "party"})
        self.assertEqual(resp.status, 400, resp.body)
        self.assertIn(resp.body["errcode"], ("M_BAD_JSON", "M_INVALID_PARAM"))
        self.assertEqual(await count_rows(alice.server, "rooms"), 0)

    async def test_default_room_version_is_12(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        create = await alice.state(room, "m.room.create")
        self.assertEqual(create["room_version"], "12")
        self.assertNotIn("creator", create)
        self.assertNotIn(":", room)  # v12 room ids are the create event's hash

    async def test_create_event_per_room_version(self) -> None:
        (alice,) = await start_users(self, "alice")
        for version in ROOM_VERSIONS:
            room = await alice.create_room(room_version=version)
            state = await state_map(alice, room)
            create = state[("m.room.create", "")]
            self.assertEqual(create["content"]["room_version"], version)
            self.assertEqual(create["sender"], alice.user_id)
            if version == "10":
                self.assertEqual(create["content"]["creator"], alice.user_id)
                self.assertTrue(room.endswith(":" + SERVER), room)
            else:
                self.assertNotIn("creator", create["content"])
            if version == "12":
                self.assertEqual(room, "!" + create["event_id"][1:])

    async def test_power_levels_per_room_version(self) -> None:
        (alice,) = await start_users(self, "alice")
        for version in ROOM_VERSIONS:
            room = await alice.create_room(room_version=version)
            power = await alice.state(room, "m.room.power_levels")
            if version == "12":
                self.assertNotIn(alice.user_id, power["users"])
                self.assertEqual(power["events"]["m.room.tombstone"], 150)
                self.assertGreater(power["events"]["m.room.tombstone"], power["state_default"])
            else:
                self.assertEqual(power["users"], {alice.user_id: 100})
                self.assertEqual(power["events"]["m.room.tombstone"], 100)
            self.assertEqual((power["ban"], power["kick"], power["redact"]), (50, 50, 50))
            self.assertEqual((power["state_default"], power["events_default"]), (50, 0))

    async def test_trusted_private_chat_gives_invitees_creator_power(self) -> None:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol")
        for version in ROOM_VERSIONS:
            room = await alice.create_room(room_version=version, preset="trusted_private_chat",
                                           invite=[bob.user_id, carol.user_id])
            state = await state_map(alice, room)
            power = state[("m.room.power_levels", "")]["content"]
            create = state[("m.room.create", "")]["content"]
            self.assertEqual(state[("m.room.join_rules", "")]["content"]["join_rule"], "invite")
            if version == "12":
                self.assertEqual(sorted(create["additional_creators"]),
                                 sorted([bob.user_id, carol.user_id]))
                self.assertEqual(power["users"], {})
            else:
                self.assertNotIn("additional_creators", create)
                self.assertEqual(power["users"], {alice.user_id: 100, bob.user_id: 100,
                                                  carol.user_id: 100})

    async def test_v12_trusted_invitees_merge_with_additional_creators(self) -> None:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol")
        room = await alice.create_room(
            preset="trusted_private_chat", invite=[bob.user_id],
            creation_content={"additional_creators": [carol.user_id, bob.user_id]})
        create = await alice.state(room, "m.room.create")
        self.assertEqual(sorted(create["additional_creators"]), sorted([bob.user_id, carol.user_id]))

    async def test_v12_trusted_invitee_can_act_as_creator_after_joining(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="trusted_private_chat", invite=[bob.user_id])
        await bob.join(room)
        await bob.put_state(room, "m.room.power_levels", {"users": {}, "ban": 10})
        self.assertEqual((await alice.state(room, "m.room.power_levels"))["ban"], 10)


class CreateRoomContentTests(TestCase):
    async def test_name_topic_and_initial_state(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room(
            name="The Pub", topic="Happy hour",
            initial_state=[
                {"type": "m.room.name", "content": {"name": "overridden"}},
                {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}},
                {"type": "org.example.custom", "state_key": "k", "content": {"x": 1}},
            ])
        self.assertEqual(await alice.state(room, "m.room.name"), {"name": "The Pub"})
        topic = await alice.state(room, "m.room.topic")
        self.assertEqual(topic["topic"], "Happy hour")
        self.assertEqual(topic["m.topic"], {"m.text": [{"body": "Happy hour", "mimetype": "text/plain"}]})
        self.assertEqual(await alice.state(room, "m.room.history_visibility"),
                         {"history_visibility": "joined"})
        self.assertEqual(await alice.state(room, "org.example.custom", "k"), {"x": 1})

    async def test_events_are_in_the_spec_order(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(
            name="n", topic="t", room_alias_name="ordered", invite=[bob.user_id],
            initial_state=[{"type": "org.example.x", "content": {}}])
        chunk = (await alice.messages(room, dir="f", limit=50))["chunk"]
        types = [e["type"] for e in chunk]
        self.assertEqual(types, [
            "m.room.create", "m.room.member", "m.room.power_levels", "m.room.canonical_alias",
            "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access",
            "org.example.x", "m.room.name", "m.room.topic", "m.room.member",
        ])
        self.assertEqual(chunk[-1]["state_key"], bob.user_id)

    async def test_power_level_content_override(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        for version in ROOM_VERSIONS:
            # The override replaces top-level keys whole, so before v12 it names the creator too.
            users = {bob.user_id: 30} if version == "12" else {alice.user_id: 100, bob.user_id: 30}
            room = await alice.create_room(
                room_version=version,
                power_level_content_override={"events_default": 20, "users": users})
            power = await alice.state(room, "m.room.power_levels")
            self.assertEqual(power["events_default"], 20)
            self.assertEqual(power["users"], users)
            self.assertEqual(power["kick"], 50)

    async def test_invite_and_is_direct(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(invite=[bob.user_id], is_direct=True)
        member = await alice.state(room, "m.room.member", bob.user_id)
        self.assertEqual(member, {"membership": "invite", "is_direct": True})
        plain = await alice.create_room(invite=[bob.user_id])
        self.assertNotIn("is_direct", await alice.state(plain, "m.room.member", bob.user_id))
        self.assertEqual(await bob.joined_rooms(), [])
        await bob.join(room)
        self.assertEqual(await bob.joined_rooms(), [room])

    async def test_creation_content_keeps_extra_keys_and_overwrites_version(self) -> None:
        (alice,) = await start_users(self, "alice")
        for version in ROOM_VERSIONS:
            room = await alice.create_room(
                room_version=version,
                creation_content={"m.federate": False, "type": "m.space", "room_version": "1",
                                  "creator": "@mallory:evil"})
            create = await alice.state(room, "m.room.create")
            self.assertIs(create["m.federate"], False)
            self.assertEqual(create["type"], "m.space")
            self.assertEqual(create["room_version"], version)
            if version == "10":
                self.assertEqual(create["creator"], alice.user_id)

    async def test_room_alias_name_makes_alias_and_canonical_alias(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room(room_alias_name="pub")
        alias = f"#pub:{SERVER}"
        self.assertEqual(await alice.state(room, "m.room.canonical_alias"), {"alias": alias})
        found = await alice.ok("GET", f"/directory/room/{q(alias)}")
        self.assertEqual(found["room_id"], room)

    async def test_taken_alias_is_room_in_use_and_nothing_created(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        await alice.create_room(room_alias_name="pub")
        resp = await bob.call("POST", "/createRoom", {"room_alias_name": "pub"})
        assert_error(self, resp, 400, "M_ROOM_IN_USE")
        self.assertEqual(await count_rows(alice.server, "rooms"), 1)
        self.assertEqual(await bob.joined_rooms(), [])

    async def test_visibility_public_lists_the_room(self) -> None:
        (alice,) = await start_users(self, "alice")
        public = await alice.create_room(visibility="public", name="Listed")
        await alice.create_room(visibility="private", name="Hidden")
        listed = await alice.ok("GET", "/publicRooms")
        self.assertEqual([r["room_id"] for r in listed["chunk"]], [public])
        self.assertEqual(listed["chunk"][0]["name"], "Listed")

    async def test_unknown_room_version_is_refused(self) -> None:
        (alice,) = await start_users(self, "alice")
        for version in ("0", "13", "01", "org.example.v"):
            resp = await alice.call("POST", "/createRoom", {"room_version": version})
            assert_error(self, resp, 400, "M_UNSUPPORTED_ROOM_VERSION")
        self.assertEqual(await count_rows(alice.server, "rooms"), 0)

    async def test_every_room_version_from_1_to_12_can_be_created_and_used(self) -> None:
        (alice,) = await start_users(self, "alice")
        for n in range(1, 13):
            room_id = (await alice.ok("POST", "/createRoom",
                                      {"room_version": str(n), "preset": "private_chat",
                                       "name": f"v{n}"}))["room_id"]
            create = await alice.ok("GET", f"/rooms/{q(room_id)}/state/m.room.create/")
            self.assertEqual(create["room_version"], str(n))
            sent = await alice.ok("PUT", f"/rooms/{q(room_id)}/send/m.room.message/t{n}",
                                  {"msgtype": "m.text", "body": "x"})
            await alice.ok("PUT", f"/rooms/{q(room_id)}/redact/{q(sent['event_id'])}/r{n}", {})
            event = await alice.ok("GET", f"/rooms/{q(room_id)}/event/{q(sent['event_id'])}")
            self.assertEqual(event["content"], {}, f"v{n}")

    async def test_bad_bodies_are_refused_and_nothing_created(self) -> None:
        (alice,) = await start_users(self, "alice")
        cases = [
            (b"not json", "M_NOT_JSON"),
            (b"{", "M_NOT_JSON"),
            (b"[]", "M_BAD_JSON"),
            (b'{"name": 5}', "M_BAD_JSON"),
            (b'{"topic": ["x"]}', "M_BAD_JSON"),
            (b'{"invite": "@bob:test.roost"}', "M_BAD_JSON"),
            (b'{"invite": [5]}', "M_BAD_JSON"),
            (b'{"initial_state": {}}', "M_BAD_JSON"),
            (b'{"initial_state": [{"type": "m.room.name"}]}', "M_BAD_JSON"),
            (b'{"initial_state": [{"type": "x", "content": {}, "state_key": 1}]}', "M_BAD_JSON"),
            (b'{"creation_content": []}', "M_BAD_JSON"),
            (b'{"power_level_content_override": "x"}', "M_BAD_JSON"),
            (b'{"room_version": 12}', "M_BAD_JSON"),
            (b'{"room_alias_name": 5}', "M_BAD_JSON"),
            (b'{"creation_content": {"x": 1.5}}', "M_BAD_JSON"),
            (b'{"power_level_content_override": {"ban": 9007199254740992}}', "M_BAD_JSON"),
            (b'{"initial_state": [{"type": "x", "content": {"f": 0.5}}]}', "M_BAD_JSON"),
        ]
        for raw, errcode in cases:
            resp = await alice.call("POST", "/createRoom", raw=raw)
            assert_error(self, resp, 400, errcode)
        self.assertEqual(await count_rows(alice.server, "rooms"), 0)
        self.assertEqual(await count_rows(alice.server, "events"), 0)

    async def test_empty_body_creates_a_private_room(self) -> None:
        (alice,) = await start_users(self, "alice")
        resp = await alice.call("POST", "/createRoom", raw=b"{}")
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(await alice.joined_rooms(), [resp.body["room_id"]])

    async def test_create_room_needs_a_token(self) -> None:
        (alice,) = await start_users(self, "alice")
        resp = await alice.server.request("POST", V3 + "/createRoom", {})
        assert_error(self, resp, 401, "M_MISSING_TOKEN")

    async def test_override_that_locks_out_the_creator_fails_whole(self) -> None:
        (alice,) = await start_users(self, "alice")
        # The creator cannot send the later events (join rules need 100), so nothing is created.
        resp = await alice.call("POST", "/createRoom", {
            "room_version": "10",
            "power_level_content_override": {"users": {alice.user_id: 0}, "state_default": 100}})
        self.assertEqual(resp.status, 403, resp.body)
        self.assertEqual(await count_rows(alice.server, "rooms"), 0)
        self.assertEqual(await alice.joined_rooms(), [])


class RoomStateTests(TestCase):
    async def test_get_all_state_and_one_state_event(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room(name="Room")
        events = await alice.ok("GET", f"/rooms/{q(room)}/state")
        types = {e["type"] for e in events}
        self.assertTrue({"m.room.create", "m.room.member", "m.room.power_levels", "m.room.name",
                         "m.room.join_rules"} <= types, types)
        for event in events:
            self.assertEqual(event["room_id"], room)
            self.assertIn("state_key", event)
            self.assertIn("event_id", event)
        full = await alice.ok("GET", f"/rooms/{q(room)}/state/m.room.name/?format=event")
        self.assertEqual(full["content"], {"name": "Room"})
        self.assertEqual(full["type"], "m.room.name")
        self.assertEqual(await alice.ok("GET", f"/rooms/{q(room)}/state/m.room.name"), {"name": "Room"})

    async def test_missing_state_event_is_not_found(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        resp = await alice.call("GET", f"/rooms/{q(room)}/state/m.room.topic/")
        assert_error(self, resp, 404, "M_NOT_FOUND")

    async def test_put_state_and_read_it_back(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        first = await alice.put_state(room, "m.room.topic", {"topic": "one"})
        again = await alice.put_state(room, "m.room.topic", {"topic": "one"})
        self.assertEqual(first, again)  # an unchanged state event is not sent twice
        second = await alice.put_state(room, "m.room.topic", {"topic": "two"})
        self.assertNotEqual(first, second)
        self.assertEqual(await alice.state(room, "m.room.topic"), {"topic": "two"})
        await alice.put_state(room, "org.example.k", {"v": 1}, state_key="key")
        self.assertEqual(await alice.state(room, "org.example.k", "key"), {"v": 1})

    async def test_put_state_bad_body(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        for raw, errcode in ((b"nope", "M_NOT_JSON"), (b"[1]", "M_BAD_JSON")):
            resp = await alice.call("PUT", f"/rooms/{q(room)}/state/m.room.topic/", raw=raw)
            assert_error(self, resp, 400, errcode)

    async def test_state_beyond_power_level_is_forbidden_and_changes_nothing(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        for version in ROOM_VERSIONS:
            room = await alice.create_room(room_version=version, preset="public_chat", name="n")
            await bob.join(room)
            before = await room_snapshot(alice, room)
            for event_type, content in (("m.room.name", {"name": "bob's"}),
                                        ("m.room.power_levels", {"users": {bob.user_id: 100}}),
                                        ("m.room.join_rules", {"join_rule": "invite"})):
                resp = await bob.call("PUT", f"/rooms/{q(room)}/state/{event_type}/", content)
                assert_error(self, resp, 403, "M_FORBIDDEN")
            self.assertEqual(await room_snapshot(alice, room), before)

    async def test_state_of_someone_else_is_forbidden(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat",
                                       power_level_content_override={"state_default": 0})
        await bob.join(room)
        resp = await bob.call("PUT", f"/rooms/{q(room)}/state/org.example.x/{q(alice.user_id)}", {})
        assert_error(self, resp, 403, "M_FORBIDDEN")
        await bob.put_state(room, "org.example.x", {"mine": True}, state_key=bob.user_id)

    async def test_non_member_can_neither_read_nor_set_state(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(name="secret")
        for path in ("/state", "/state/m.room.name/", "/members", "/joined_members"):
            resp = await bob.call("GET", f"/rooms/{q(room)}{path}")
            assert_error(self, resp, 403, "M_FORBIDDEN")
        resp = await bob.call("PUT", f"/rooms/{q(room)}/state/m.room.name/", {"name": "x"})
        assert_error(self, resp, 403, "M_FORBIDDEN")
        self.assertEqual(await alice.state(room, "m.room.name"), {"name": "secret"})

    async def test_unknown_room_state_is_forbidden_or_not_found(self) -> None:
        (alice,) = await start_users(self, "alice")
        for method, path in (("GET", "/state"), ("GET", "/members"), ("GET", "/joined_members")):
            resp = await alice.call(method, f"/rooms/{q('!nope:test.roost')}{path}")
            self.assertIn(resp.status, (403, 404), resp.body)
            self.assertIn(resp.body["errcode"], ("M_FORBIDDEN", "M_NOT_FOUND"))

    async def test_former_member_reads_state_as_it_was_when_they_left(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat", name="before")
        await bob.join(room)
        await bob.leave(room)
        await alice.put_state(room, "m.room.name", {"name": "after"})
        self.assertEqual(await bob.state(room, "m.room.name"), {"name": "before"})
        names = [e for e in await bob.ok("GET", f"/rooms/{q(room)}/state") if e["type"] == "m.room.name"]
        self.assertEqual(names[0]["content"], {"name": "before"})

    async def test_world_readable_state_for_non_member(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(name="open", initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}])
        self.assertEqual(await bob.state(room, "m.room.name"), {"name": "open"})


class MembersTests(TestCase):
    async def _room(self) -> tuple[list[Client], str]:
        alice, bob, carol, dave = await start_users(self, "alice", "bob", "carol", "dave")
        room = await alice.create_room(preset="public_chat")
        await bob.join(room)
        await carol.join(room)
        await alice.invite(room, dave.user_id)
        await carol.leave(room)
        return [alice, bob, carol, dave], room

    async def test_members_lists_every_membership(self) -> None:
        (alice, bob, carol, dave), room = await self._room()
        chunk = (await alice.ok("GET", f"/rooms/{q(room)}/members"))["chunk"]
        got = {e["state_key"]: e["content"]["membership"] for e in chunk}
        self.assertEqual(got, {alice.user_id: "join", bob.user_id: "join",
                               carol.user_id: "leave", dave.user_id: "invite"})
        self.assertTrue(all(e["type"] == "m.room.member" for e in chunk))

    async def test_members_membership_and_not_membership_filters(self) -> None:
        (alice, bob, carol, dave), room = await self._room()
        base = f"/rooms/{q(room)}/members"
        joined = (await alice.ok("GET", base + "?membership=join"))["chunk"]
        self.assertEqual(sorted(e["state_key"] for e in joined), sorted([alice.user_id, bob.user_id]))
        not_left = (await alice.ok("GET", base + "?not_membership=leave"))["chunk"]
        self.assertEqual(sorted(e["state_key"] for e in not_left),
                         sorted([alice.user_id, bob.user_id, dave.user_id]))
        invited = (await alice.ok("GET", base + "?membership=invite"))["chunk"]
        self.assertEqual([e["state_key"] for e in invited], [dave.user_id])

    async def test_members_at_a_pagination_token(self) -> None:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol")
        room = await alice.create_room(preset="public_chat")
        await bob.join(room)
        token = (await alice.messages(room, limit=1))["start"]
        await carol.join(room)
        await bob.leave(room)
        chunk = (await alice.ok("GET", f"/rooms/{q(room)}/members?at={token}"))["chunk"]
        got = {e["state_key"]: e["content"]["membership"] for e in chunk}
        self.assertEqual(got, {alice.user_id: "join", bob.user_id: "join"})
        resp = await alice.call("GET", f"/rooms/{q(room)}/members?at=garbage")
        self.assertEqual(resp.status, 400, resp.body)

    async def test_joined_members(self) -> None:
        (alice, bob, carol, dave), room = await self._room()
        await bob.put_state(room, "m.room.member", {"membership": "join", "displayname": "Bob"},
                            state_key=bob.user_id)
        joined = (await alice.ok("GET", f"/rooms/{q(room)}/joined_members"))["joined"]
        self.assertEqual(set(joined), {alice.user_id, bob.user_id})
        self.assertEqual(joined[bob.user_id]["display_name"], "Bob")
