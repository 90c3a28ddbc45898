"""Erasure: deactivating with erase: true hides the user's messages from members who join
later, on this server and in what it serves over federation; those who were in the room
when the messages were sent still see them."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.federation.two_servers import V3, eventually, start_pair
from tests.server_harness import q


def _auth(user: str) -> dict:
    return {"type": "m.login.password", "password": "hunter2-pw",
            "identifier": {"type": "m.id.user", "user": user}}


async def _bodies(node, user: str, room: str) -> dict[str, str | None]:
    resp = await node.request("GET", f"{V3}/rooms/{q(room)}/messages?dir=b&limit=50",
                              user=user)
    return {e["event_id"]: e["content"].get("body") for e in resp["chunk"]
            if e["type"] == "m.room.message"}


class ErasureTests(TestCase):
    timeout = 180

    async def test_erased_messages_are_hidden_from_later_members_here_and_remote(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        await hs1.register("bob")
        await hs1.register("carol")
        await hs1.register("mallory")
        await hs2.register("dave")
        room = (await hs1.request("POST", f"{V3}/createRoom", {"preset": "public_chat"},
                                  user="alice"))["room_id"]
        await hs1.request("POST", f"{V3}/rooms/{q(room)}/join", {}, user="bob")
        await hs1.request("POST", f"{V3}/rooms/{q(room)}/join", {}, user="mallory")
        said = (await hs1.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/1",
                                  {"msgtype": "m.text", "body": "forget me"},
                                  user="mallory"))["event_id"]
        kept = (await hs1.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/2",
                                  {"msgtype": "m.text", "body": "bob stays"},
                                  user="bob"))["event_id"]
        bad = await hs1.request("POST", f"{V3}/account/deactivate",
                                {"auth": _auth("mallory"), "erase": "yes"}, user="mallory",
                                expect=None)
        self.assertEqual((bad.status, bad.body["errcode"]), (400, "M_INVALID_PARAM"))
        await hs1.request("POST", f"{V3}/account/deactivate",
                          {"auth": _auth("mallory"), "erase": True}, user="mallory")

        # Bob was there: he still reads it. Carol joins later: she reads it erased.
        self.assertEqual((await _bodies(hs1, "bob", room))[said], "forget me")
        await hs1.request("POST", f"{V3}/rooms/{q(room)}/join", {}, user="carol")
        seen = await _bodies(hs1, "carol", room)
        self.assertIsNone(seen[said])
        self.assertEqual(seen[kept], "bob stays")
        event = await hs1.request("GET", f"{V3}/rooms/{q(room)}/event/{q(said)}", user="carol")
        self.assertEqual(event["content"], {})

        # Dave on hs2 joins later too: hs1 serves the history with the message erased.
        await hs2.request("POST", f"{V3}/join/{q(room)}?server_name={q(hs1.name)}", {},
                          user="dave")

        async def dave_sees_history() -> bool:
            return kept in await _bodies(hs2, "dave", room)

        await eventually(dave_sees_history)
        seen = await _bodies(hs2, "dave", room)
        self.assertEqual(seen[kept], "bob stays")
        self.assertIn(said, seen)
        self.assertIsNone(seen[said])
