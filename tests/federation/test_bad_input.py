"""Bad federation input over inbound /send, between two real Roost servers over TLS.

Server B's own signed federation client plays a careless or hostile server:
each bad PDU is answered with its own error (or, for a whole transaction that
is not a Matrix transaction, the request is refused), nothing of it reaches the
room, and the room goes on working for everybody.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from roost.federation.transport.client import HttpResponseError
from roost.rooms.builder import build_event_pdu, finalize_pdu, select_auth_event_ids
from tests.federation.test_served import FED, fed, public_room, q
from tests.federation.two_servers import V3, FedNode, eventually, room_events, start_pair


class BadSendTests(TestCase):
    async def _joined_pair(self) -> tuple[FedNode, FedNode, str, str]:
        a, b = await start_pair(self)
        await a.register("alice")
        bob = await b.register("bob")
        room_id = await public_room(a, "alice")
        await b.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(a.name)}", {}, user="bob")
        return a, b, bob, room_id

    async def _signed_by_b(self, a: FedNode, b: FedNode, room_id: str, sender: str,
                           event_type: str, content: dict[str, Any],
                           state_key: str | None = None) -> tuple[str, dict[str, Any]]:
        """An event on A's current head, its auth events picked as the spec says, signed by B.
        Built by hand, so that it may break the auth rules."""
        assert a.server is not None and b.server is not None
        engine = a.server.hs.engine
        version, message = await engine.build_for_remote(
            room_id, sender, "m.room.message", {"body": "probe"})
        state = {key: e.event_id for key, e in (await engine.current_state_events(room_id)).items()}
        pdu = build_event_pdu(
            version, room_id, sender, event_type, content, state_key,
            prev_event_ids=message["prev_events"],
            auth_event_ids=select_auth_event_ids(version, event_type, sender, state_key, content,
                                                 state),
            depth=message["depth"], origin_server_ts=message["origin_server_ts"])
        return finalize_pdu(pdu, version, b.name, b.server.hs.local_key.signing_key)

    async def _send(self, a: FedNode, b: FedNode, txn: str, pdus: list[dict[str, Any]]) -> Any:
        return await fed(b, a, "PUT", f"{FED}/v1/send/{txn}",
                         {"origin": b.name, "origin_server_ts": 1, "pdus": pdus, "edus": []})

    async def _event_count(self, node: FedNode) -> int:
        assert node.server is not None
        rows = await node.server.hs.db.run(
            "count", lambda t: t.query_one("SELECT COUNT(*) FROM events"))
        return int(rows[0])

    async def test_a_bad_content_hash_means_the_event_is_stored_redacted(self) -> None:
        a, b, bob, room_id = await self._joined_pair()
        event_id, signed = await self._signed_by_b(
            a, b, room_id, bob, "m.room.message", {"msgtype": "m.text", "body": "original"})
        tampered = dict(signed, content={"msgtype": "m.text", "body": "changed in transit"})
        answer = await self._send(a, b, "hash1", [tampered])
        self.assertEqual(answer["pdus"], {event_id: {}})
        got = await a.request("GET", f"{V3}/rooms/{q(room_id)}/event/{q(event_id)}", user="alice")
        self.assertEqual(got["content"], {})

    async def test_events_that_fail_auth_or_are_too_large_are_refused_alone(self) -> None:
        a, b, bob, room_id = await self._joined_pair()
        before = await self._event_count(a)
        # Bob has power 0; naming the room needs 50.
        renamed_id, renamed = await self._signed_by_b(
            a, b, room_id, bob, "m.room.name", {"name": "taken over"}, "")
        huge_id, huge = await self._signed_by_b(
            a, b, room_id, bob, "m.room.message", {"msgtype": "m.text", "body": "x" * 70_000})
        # Signed by B, but for a user of A: B may not speak for A's users.
        forged_id, forged = await self._signed_by_b(
            a, b, room_id, a.user_id("alice"), "m.room.message", {"body": "not alice"})
        answer = await self._send(a, b, "bad1", [renamed, huge, forged])

        pdus = answer["pdus"]
        for event_id in (renamed_id, huge_id, forged_id):
            self.assertIsInstance(pdus.get(event_id, {}).get("error"), str, repr(pdus))
        name = await a.request("GET", f"{V3}/rooms/{q(room_id)}/state/m.room.name/",
                               user="alice", expect=None)
        self.assertNotEqual(getattr(name, "body", {}).get("name"), "taken over")
        bodies = [e["content"].get("body") for e in await room_events(a, "alice", room_id)]
        self.assertNotIn("not alice", bodies)
        self.assertNotIn("x" * 70_000, bodies)
        # A rejected event may be stored as rejected; none is served or became state.
        served = await a.request("GET", f"{V3}/rooms/{q(room_id)}/event/{q(renamed_id)}",
                                 user="alice", expect=None)
        self.assertEqual(served.status, 404)
        self.assertLessEqual(await self._event_count(a) - before, 3)
        await self._room_still_works(a, b, room_id)

    async def test_a_transaction_of_a_thousand_pdus_is_refused_whole(self) -> None:
        a, b, bob, room_id = await self._joined_pair()
        before = await self._event_count(a)
        _, good = await self._signed_by_b(
            a, b, room_id, bob, "m.room.message", {"msgtype": "m.text", "body": "in the flood"})
        try:
            await self._send(a, b, "flood", [good] * 1000)
        except HttpResponseError as e:
            self.assertEqual((e.status, e.errcode), (400, "M_BAD_JSON"))
        else:
            self.fail("a transaction of 1,000 PDUs was accepted")
        self.assertEqual(await self._event_count(a), before)
        await self._room_still_works(a, b, room_id)

    async def _room_still_works(self, a: FedNode, b: FedNode, room_id: str) -> None:
        """Nothing else disturbed: a real message from B's user still reaches A's user."""
        await b.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/after",
                        {"msgtype": "m.text", "body": "still here"}, user="bob")

        async def arrived() -> bool:
            return any(e["content"].get("body") == "still here"
                       for e in await room_events(a, "alice", room_id))

        await eventually(arrived)
