"""Remote joins, invites and leaves.

`TemplateTests` and `VerificationTests` run `RemoteRooms` against a fake
transport (what a resident server would answer) on one real homeserver, and
need nothing of the inbound side. `RoostToRoostTests` runs two real servers
over TLS, inbound side included (served /make_join, /send_join, /invite, /send,
/query/directory and `RoomEngine.create_remote_room`).
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from roost.federation.joins import RemoteRooms
from roost.federation.transport.client import RequestFailedError
from roost.rooms.builder import finalize_pdu
from roost.rooms.engine import RoomError
from roost.rooms.events import Event
from roost.rooms.redaction import redacted_view
from roost.rooms.versions import get_room_version
from tests.federation.two_servers import V3, eventually, room_events, start_node, start_pair
from tests.server_harness import RunningServer, q, start_server

V11 = get_room_version("11")


class FakeClient:
    """Answers make_join/make_leave with a template; records every request."""

    def __init__(self, template: dict[str, Any], version: str = "11") -> None:
        self.template = template
        self.version = version
        self.requests: list[tuple[str, str, str, Any]] = []
        self.send_join_answer: dict[str, Any] = {"state": [], "auth_chain": []}

    async def get_json(self, destination: str, path: str, args: Any = None, **o: Any) -> Any:
        self.requests.append(("GET", destination, path, args))
        return {"room_version": self.version, "event": self.template}

    async def put_json(self, destination: str, path: str, body: Any, args: Any = None,
                       **o: Any) -> Any:
        self.requests.append(("PUT", destination, path, body))
        return self.send_join_answer


def _template(room: str, user: str, membership: str = "join", **changes: Any) -> dict:
    template = {"room_id": room, "type": "m.room.member", "sender": user,
                "state_key": user, "content": {"membership": membership},
                "prev_events": ["$prev"], "auth_events": ["$create"], "depth": 5,
                "origin_server_ts": 1}
    template.update(changes)
    return template


async def _remote_rooms(testcase: TestCase, client: Any) -> tuple[RunningServer, RemoteRooms]:
    server = await start_server(testcase)
    hs = server.hs
    assert hs.federation is not None
    from roost.storage.room_state import RoomStateStore

    remote = RemoteRooms(client, hs.federation.keyring, hs.engine, RoomStateStore(hs.db),
                         hs.config.server_name, hs.local_key.signing_key, hs.clock)
    return server, remote


class TemplateTests(TestCase):
    ROOM = "!room:remote.test"
    USER = "@alice:test.roost"

    async def _refused(self, template: dict[str, Any], version: str = "11") -> FakeClient:
        client = FakeClient(template, version)
        _, remote = await _remote_rooms(self, client)
        with self.assertRaises(RoomError):
            await remote.join(self.ROOM, self.USER, ["remote.test"])
        # Nothing was signed and sent: only the make_join went out.
        self.assertEqual([r[0] for r in client.requests], ["GET"])
        return client

    async def test_make_join_asks_for_our_room_versions(self) -> None:
        client = await self._refused(_template(self.ROOM, self.USER, room_id="!other:remote.test"))
        method, destination, path, args = client.requests[0]
        self.assertEqual(destination, "remote.test")
        self.assertEqual(path, f"/_matrix/federation/v1/make_join/{q(self.ROOM)}/{q(self.USER)}")
        self.assertEqual(sorted(args["ver"], key=int), [str(n) for n in range(1, 13)])

    async def test_wrong_sender_state_key_type_or_membership_is_refused(self) -> None:
        for bad in ({"sender": "@mallory:test.roost"}, {"state_key": "@mallory:test.roost"},
                    {"type": "m.room.power_levels"}, {"content": {"membership": "invite"}},
                    {"content": "join"}):
            await self._refused(_template(self.ROOM, self.USER, **bad))

    async def test_unknown_room_version_is_refused(self) -> None:
        await self._refused(_template(self.ROOM, self.USER), version="1")

    async def test_malformed_template_is_refused(self) -> None:
        await self._refused(_template(self.ROOM, self.USER, prev_events="nope"))

    async def test_a_good_template_is_signed_and_sent_to_send_join_v2(self) -> None:
        client = FakeClient(_template(self.ROOM, self.USER))
        server, remote = await _remote_rooms(self, client)
        with self.assertRaises(RoomError):  # the empty send_join answer has no create event
            await remote.join(self.ROOM, self.USER, ["remote.test"], {"displayname": "Alice"})
        method, destination, path, body = client.requests[1]
        self.assertEqual(method, "PUT")
        self.assertTrue(path.startswith(f"/_matrix/federation/v2/send_join/{q(self.ROOM)}/%24"))
        event = Event.from_pdu(body, V11)
        self.assertEqual(path.rsplit("/", 1)[1], q(event.event_id))
        self.assertEqual(event.content, {"membership": "join", "displayname": "Alice"})
        self.assertIn(server.hs.config.server_name, event.signatures)
        await server.hs.federation.keyring.verify_json_for_server(
            server.hs.config.server_name, redacted_view(body, V11), 0)

    async def test_servers_come_from_via_then_the_room_id(self) -> None:
        client = FakeClient(_template(self.ROOM, self.USER, sender="@x:y"))
        _, remote = await _remote_rooms(self, client)
        with self.assertRaises(RoomError):
            await remote.join(self.ROOM, self.USER, ["a.test", "test.roost", "a.test"])
        self.assertEqual([r[1] for r in client.requests], ["a.test", "remote.test"])


class VerificationTests(TestCase):
    """The send_join state is checked: signatures through the key ring, hashes, the room."""

    async def test_bad_signatures_are_dropped_and_bad_hashes_redacted(self) -> None:
        client = FakeClient({})
        server, remote = await _remote_rooms(self, client)
        name = server.hs.config.server_name
        key = server.hs.local_key.signing_key
        room_id = f"!r:{name}"

        def signed(event_type: str, content: dict[str, Any], state_key: str = "") -> dict:
            pdu = {"room_id": room_id, "type": event_type, "sender": f"@a:{name}",
                   "state_key": state_key, "content": content, "prev_events": [],
                   "auth_events": [], "depth": 1, "origin_server_ts": 1000}
            return finalize_pdu(pdu, V11, name, key)[1]

        good = signed("m.room.create", {"room_version": "11"})
        forged = signed("m.room.name", {"name": "real"})
        forged["content"] = {"name": "forged"}
        forged["hashes"] = {"sha256": "x"}  # the signature covers the hash: now wrong
        forged_sig = signed("m.room.topic", {"topic": "t"})
        forged_sig["signatures"] = {name: {"ed25519:" + key.version: "A" * 86}}
        rehashed = signed("m.room.join_rules", {"join_rule": "public", "extra": 1})
        rehashed["content"] = {"join_rule": "public", "extra": 2}  # signature covers redacted
        other_room = signed("m.room.avatar", {})
        other_room["room_id"] = "!elsewhere:x"
        checked = await remote._checked_events([good, forged, forged_sig, rehashed, other_room,
                                                "junk"], V11, room_id)
        by_type = {e.type: e for e in checked}
        self.assertIn("m.room.create", by_type)
        self.assertNotIn("m.room.topic", by_type)  # bad signature: dropped
        self.assertNotIn("m.room.name", by_type)  # re-hashed content: signature fails
        self.assertNotIn("m.room.avatar", by_type)  # another room: dropped
        # Content changed after signing: the signature (over the redacted form) holds,
        # the hash does not, so the redacted event is used.
        self.assertEqual(by_type["m.room.join_rules"].content, {"join_rule": "public"})
        self.assertEqual(len(checked), 2)


class RoostToRoostTests(TestCase):
    """NEEDS the inbound side (served make_join/send_join/invite/send, create_remote_room)."""

    timeout = 120

    async def _room(self, hs1: Any, **body: Any) -> str:
        created = await hs1.request("POST", V3 + "/createRoom",
                                    {"preset": "public_chat", "name": "Across", **body},
                                    user="alice")
        return created["room_id"]

    async def _messages(self, node: Any, user: str, room_id: str) -> list[str]:
        return [e["content"].get("body") for e in await room_events(node, user, room_id)
                if e["type"] == "m.room.message"]

    async def test_join_by_id_then_messages_cross_both_ways(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        bob = await hs2.register("bob")
        room_id = await self._room(hs1)
        joined = await hs2.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(hs1.name)}",
                                   {}, user="bob")
        self.assertEqual(joined["room_id"], room_id)
        name = await hs2.request("GET", f"{V3}/rooms/{q(room_id)}/state/m.room.name/", user="bob")
        self.assertEqual(name["name"], "Across")
        members = await eventually(lambda: _joined(hs1, "alice", room_id, bob))
        self.assertTrue(members)
        await hs1.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/1",
                          {"msgtype": "m.text", "body": "from hs1"}, user="alice")
        await hs2.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/2",
                          {"msgtype": "m.text", "body": "from hs2"}, user="bob")
        await eventually(lambda: _has(self._messages(hs2, "bob", room_id), "from hs1"))
        await eventually(lambda: _has(self._messages(hs1, "alice", room_id), "from hs2"))

    async def test_join_by_remote_alias(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        await hs2.register("bob")
        room_id = await self._room(hs1, room_alias_name="across")
        joined = await hs2.request("POST", f"{V3}/join/{q('#across:' + hs1.name)}", {}, user="bob")
        self.assertEqual(joined["room_id"], room_id)

    async def test_invite_a_remote_user_who_joins(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        bob = await hs2.register("bob")
        room_id = await self._room(hs1, preset="private_chat")
        await hs1.request("POST", f"{V3}/rooms/{q(room_id)}/invite", {"user_id": bob},
                          user="alice")
        membership = await hs1.request(
            "GET", f"{V3}/rooms/{q(room_id)}/state/m.room.member/{q(bob)}", user="alice")
        self.assertEqual(membership["membership"], "invite")

        async def invited() -> bool:
            sync = await hs2.request("GET", f"{V3}/sync?timeout=0", user="bob")
            return room_id in sync.get("rooms", {}).get("invite", {})

        await eventually(invited)
        await hs2.request("POST", f"{V3}/rooms/{q(room_id)}/join", {}, user="bob")
        await eventually(lambda: _joined(hs1, "alice", room_id, bob))

    async def test_leave_a_remote_room(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        bob = await hs2.register("bob")
        room_id = await self._room(hs1)
        await hs2.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(hs1.name)}", {},
                          user="bob")
        await eventually(lambda: _joined(hs1, "alice", room_id, bob))
        await hs2.request("POST", f"{V3}/rooms/{q(room_id)}/leave", {}, user="bob")

        async def left() -> bool:
            state = await hs1.request(
                "GET", f"{V3}/rooms/{q(room_id)}/state/m.room.member/{q(bob)}", user="alice")
            return state.get("membership") == "leave"

        await eventually(left)

    async def test_a_rejoin_is_checked_against_the_state_send_join_returns(self) -> None:
        """Bob left; while his server had nobody in the room, it went from invite-only to
        public, which his server never heard. The rejoin is judged on the resident's state
        (send_join's answer), not on the stale copy, and that state becomes current."""
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        bob = await hs2.register("bob")
        room_id = await self._room(hs1, preset="private_chat")
        await hs1.request("POST", f"{V3}/rooms/{q(room_id)}/invite", {"user_id": bob},
                          user="alice")
        await hs2.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(hs1.name)}", {},
                          user="bob")
        await eventually(lambda: _joined(hs1, "alice", room_id, bob))
        await hs2.request("POST", f"{V3}/rooms/{q(room_id)}/leave", {}, user="bob")
        await eventually(lambda: _membership_is(hs1, room_id, bob, "leave"))
        await hs1.request("PUT", f"{V3}/rooms/{q(room_id)}/state/m.room.join_rules/",
                          {"join_rule": "public"}, user="alice")
        await hs1.request("PUT", f"{V3}/rooms/{q(room_id)}/state/m.room.topic/",
                          {"topic": "open now"}, user="alice")
        assert hs2.server is not None
        stale = await hs2.server.hs.engine.current_state_events(room_id)
        self.assertEqual(stale[("m.room.join_rules", "")].content["join_rule"], "invite")

        await hs2.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(hs1.name)}", {},
                          user="bob")
        self.assertEqual(await hs2.server.hs.engine.membership(room_id, bob), "join")
        await eventually(lambda: _joined(hs1, "alice", room_id, bob))
        topic = await hs2.request("GET", f"{V3}/rooms/{q(room_id)}/state/m.room.topic/",
                                  user="bob")
        self.assertEqual(topic["topic"], "open now")
        await hs2.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/back",
                          {"msgtype": "m.text", "body": "back"}, user="bob")
        await eventually(lambda: _has(self._messages(hs1, "alice", room_id), "back"))
        await hs1.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/wb",
                          {"msgtype": "m.text", "body": "welcome back"}, user="alice")
        await eventually(lambda: _has(self._messages(hs2, "bob", room_id), "welcome back"))

    async def test_reject_a_remote_invite(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        bob = await hs2.register("bob")
        room_id = await self._room(hs1, preset="private_chat")
        await hs1.request("POST", f"{V3}/rooms/{q(room_id)}/invite", {"user_id": bob},
                          user="alice")
        await hs2.request("POST", f"{V3}/rooms/{q(room_id)}/leave", {}, user="bob")
        state = await hs1.request(
            "GET", f"{V3}/rooms/{q(room_id)}/state/m.room.member/{q(bob)}", user="alice")
        self.assertEqual(state["membership"], "leave")


async def _joined(node: Any, user: str, room_id: str, member: str) -> bool:
    resp = await node.request("GET", f"{V3}/rooms/{q(room_id)}/joined_members", user=user,
                              expect=None)
    return resp.status == 200 and member in resp.body.get("joined", {})


async def _membership_is(node: Any, room_id: str, user_id: str, membership: str) -> bool:
    return await node.server.hs.engine.membership(room_id, user_id) == membership


async def _has(messages: Any, body: str) -> bool:
    return body in await messages


class HarnessTests(TestCase):
    """The two-server harness itself; needs nothing of the inbound side."""

    async def test_servers_reach_each_other_by_name_and_survive_a_restart(self) -> None:
        hs1 = await start_node(self)
        hs2 = await start_node(self)
        assert hs1.server and hs2.server
        fed2 = hs2.server.hs.federation
        assert fed2 is not None
        version = await fed2.client.get_json(hs1.name, "/_matrix/federation/v1/version")
        self.assertEqual(version["server"]["name"], "Roost")
        signed = hs1.server.hs.local_key.sign_json({"hello": "world"})
        await fed2.keyring.verify_json_for_server(hs1.name, signed, 0)
        await hs1.stop()
        with self.assertRaises(RequestFailedError):
            await fed2.client.get_json(hs1.name, "/_matrix/federation/v1/version",
                                       ignore_backoff=True)
        await hs1.start()
        again = await fed2.client.get_json(hs1.name, "/_matrix/federation/v1/version",
                                           ignore_backoff=True)
        self.assertEqual(again, version)
        # Same name, same key after the restart.
        signed = hs1.server.hs.local_key.sign_json({"hello": "again"})
        await fed2.keyring.verify_json_for_server(hs1.name, signed, 0)
