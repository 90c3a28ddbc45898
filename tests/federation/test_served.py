"""The served federation endpoints and inbound /send, between two real Roost servers over TLS.

Server A hosts rooms; server B's own signed federation client plays the remote
server for the direct endpoint tests, and B's users join through the client API
(make_join / send_join) for the end-to-end ones.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.trial.unittest import TestCase

from roost.federation.transport.client import HttpResponseError
from roost.rooms.builder import finalize_pdu
from roost.rooms.versions import KNOWN_ROOM_VERSIONS
from tests.federation.two_servers import V3, FedNode, eventually, room_events, start_pair

FED = "/_matrix/federation"


def q(value: str) -> str:
    return quote(value, safe="")


async def public_room(node: FedNode, user: str, version: str = "12") -> str:
    body = await node.request("POST", V3 + "/createRoom",
                              {"preset": "public_chat", "room_version": version}, user=user)
    return body["room_id"]


async def fed(b: FedNode, a: FedNode, method: str, path: str, body: Any = None,
              args: Any = None, sign: bool = True) -> Any:
    assert b.server is not None and b.server.hs.federation is not None
    return await b.server.hs.federation.client.request(method, a.name, path, args, body, sign=sign)


class ServedTests(TestCase):
    async def _setup(self) -> tuple[FedNode, FedNode, str, str]:
        a, b = await start_pair(self)
        await a.register("alice")
        room_id = await public_room(a, "alice")
        return a, b, a.user_id("alice"), room_id

    async def _err(self, coro: Any) -> HttpResponseError:
        try:
            await coro
        except HttpResponseError as e:
            return e
        raise AssertionError("expected an error answer")

    async def test_make_join_template_and_versions(self) -> None:
        a, b, alice, room_id = await self._setup()
        bob = b.user_id("bob")
        answer = await fed(b, a, "GET", f"{FED}/v1/make_join/{q(room_id)}/{q(bob)}",
                           args={"ver": ["10", "11", "12"]})
        self.assertEqual(answer["room_version"], "12")
        event = answer["event"]
        self.assertEqual((event["type"], event["state_key"], event["sender"]),
                         ("m.room.member", bob, bob))
        self.assertEqual(event["content"], {"membership": "join"})
        self.assertNotIn("signatures", event)
        e = await self._err(fed(b, a, "GET", f"{FED}/v1/make_join/{q(room_id)}/{q(bob)}",
                                args={"ver": ["10"]}))
        self.assertEqual((e.status, e.errcode), (400, "M_INCOMPATIBLE_ROOM_VERSION"))
        # Someone else's user, or an unknown room.
        e = await self._err(fed(b, a, "GET", f"{FED}/v1/make_join/{q(room_id)}/{q(alice)}",
                                args={"ver": ["12"]}))
        self.assertEqual(e.status, 403)
        e = await self._err(fed(b, a, "GET", f"{FED}/v1/make_join/{q('!nope:x')}/{q(bob)}",
                                args={"ver": ["12"]}))
        self.assertEqual(e.status, 404)

    async def test_unsigned_request_is_refused(self) -> None:
        a, b, alice, room_id = await self._setup()
        e = await self._err(fed(b, a, "GET", f"{FED}/v1/make_join/{q(room_id)}/{q(b.user_id('x'))}",
                                args={"ver": ["12"]}, sign=False))
        self.assertEqual((e.status, e.errcode), (401, "M_UNAUTHORIZED"))

    async def test_send_join_checks_and_returns_state(self) -> None:
        a, b, alice, room_id = await self._setup()
        assert b.server is not None
        bob = b.user_id("bob")
        answer = await fed(b, a, "GET", f"{FED}/v1/make_join/{q(room_id)}/{q(bob)}",
                           args={"ver": ["12"]})
        version = KNOWN_ROOM_VERSIONS["12"]
        template = answer["event"]
        key = b.server.hs.local_key.signing_key
        # Content changed after signing: the hash does not match.
        event_id, signed = finalize_pdu(template, version, b.name, key)
        forged = dict(signed, content={"membership": "join", "displayname": "evil"})
        e = await self._err(fed(b, a, "PUT", f"{FED}/v2/send_join/{q(room_id)}/{q(event_id)}",
                                forged))
        self.assertEqual(e.status, 400)
        # Signed by the wrong server's key: the sender's server must sign.
        _, wrong = finalize_pdu(template, version, "evil.example", key)
        wrong_id = event_id
        e = await self._err(fed(b, a, "PUT", f"{FED}/v2/send_join/{q(room_id)}/{q(wrong_id)}",
                                dict(wrong, signatures={"evil.example": wrong["signatures"]
                                                        ["evil.example"]})))
        self.assertIn(e.status, (400, 401))
        # Outsiders cannot read the room before joining.
        e = await self._err(fed(b, a, "GET", f"{FED}/v1/state_ids/{q(room_id)}",
                                args={"event_id": template["prev_events"][0]}))
        self.assertEqual((e.status, e.errcode), (403, "M_FORBIDDEN"))
        e = await self._err(fed(b, a, "GET", f"{FED}/v1/event/{q(template['prev_events'][0])}"))
        self.assertEqual(e.status, 403)
        # The real thing.
        joined = await fed(b, a, "PUT", f"{FED}/v2/send_join/{q(room_id)}/{q(event_id)}", signed)
        state_types = {(p["type"], p["state_key"]) for p in joined["state"]}
        self.assertIn(("m.room.create", ""), state_types)
        self.assertIn(("m.room.member", alice), state_types)
        self.assertNotIn(("m.room.member", bob), state_types)  # the state *before* the join
        self.assertTrue(joined["auth_chain"])
        self.assertIn(a.name, joined["servers_in_room"])
        # Now a member server: it may read the room.
        state_ids = await fed(b, a, "GET", f"{FED}/v1/state_ids/{q(room_id)}",
                              args={"event_id": event_id})
        self.assertEqual(sorted(state_ids["pdu_ids"]),
                         sorted(p_id for p_id in _ids(joined["state"])))
        got = await fed(b, a, "GET", f"{FED}/v1/event/{q(event_id)}")
        self.assertEqual(got["pdus"][0]["state_key"], bob)
        backfill = await fed(b, a, "GET", f"{FED}/v1/backfill/{q(room_id)}",
                             args={"v": [event_id], "limit": "100"})
        self.assertEqual(backfill["pdus"][0]["type"], "m.room.member")
        self.assertEqual(backfill["pdus"][-1]["type"], "m.room.create")
        missing = await fed(b, a, "POST", f"{FED}/v1/get_missing_events/{q(room_id)}",
                            {"earliest_events": [], "latest_events": [event_id], "limit": 3})
        self.assertEqual(len(missing["events"]), 3)
        auth = await fed(b, a, "GET", f"{FED}/v1/event_auth/{q(room_id)}/{q(event_id)}")
        self.assertIn("m.room.create", {p["type"] for p in auth["auth_chain"]})
        # Alice sees Bob joined.
        members = await a.request("GET", V3 + f"/rooms/{q(room_id)}/joined_members", user="alice")
        self.assertIn(bob, members["joined"])

    async def test_remote_join_then_messages_flow_both_ways(self) -> None:
        """A to B works; B to A waits for the sender: it finds the hosts of a room through
        room_memberships, which has no rows for the members B learnt from send_join's state
        (outliers), so B's sender believes nobody else is in the room."""
        a, b, alice, room_id = await self._setup()
        await b.register("bob")
        await b.request("POST", V3 + f"/join/{q(room_id)}?server_name={q(a.name)}", {}, user="bob")
        await a.request("PUT", V3 + f"/rooms/{q(room_id)}/send/m.room.message/t1",
                        {"msgtype": "m.text", "body": "hello bob"}, user="alice")

        async def bob_sees() -> bool:
            events = await room_events(b, "bob", room_id)
            return any(e.get("content", {}).get("body") == "hello bob" for e in events)

        await eventually(bob_sees)
        await b.request("PUT", V3 + f"/rooms/{q(room_id)}/send/m.room.message/t2",
                        {"msgtype": "m.text", "body": "hi alice"}, user="bob")

        async def alice_sees() -> bool:
            events = await room_events(a, "alice", room_id)
            return any(e.get("content", {}).get("body") == "hi alice" for e in events)

        await eventually(alice_sees)

    async def test_transactions_are_idempotent_and_report_per_pdu(self) -> None:
        a, b, alice, room_id = await self._setup()
        answer = await fed(b, a, "PUT", f"{FED}/v1/send/txn1",
                           {"origin": b.name, "origin_server_ts": 1, "pdus": [
                               {"room_id": room_id, "type": "m.room.message"}], "edus": []})
        self.assertEqual(list(answer["pdus"].values())[0].keys(), {"error"})
        again = await fed(b, a, "PUT", f"{FED}/v1/send/txn1",
                          {"origin": b.name, "origin_server_ts": 1, "pdus": [], "edus": []})
        self.assertEqual(again, answer)
        e = await self._err(fed(b, a, "PUT", f"{FED}/v1/send/txn2",
                                {"origin": b.name, "pdus": [{}] * 51, "edus": []}))
        self.assertEqual(e.status, 400)


def _ids(pdus: list[dict[str, Any]]) -> list[str]:
    from roost.rooms.events import Event

    version = KNOWN_ROOM_VERSIONS["12"]
    return [Event.from_pdu(p, version).event_id for p in pdus]
