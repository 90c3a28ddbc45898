"""Issue 10, finding 2 with the kicker on another server: the kicked user's long-polling
/sync answers with the room under `leave`, the kick last, never under `join`."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from tests.federation.two_servers import V3, FedNode, eventually, start_pair
from tests.server_harness import q


async def _sync(node: FedNode, user: str, since: str | None = None,
                timeout_ms: int = 0) -> Any:
    query = f"?timeout={timeout_ms}" + (f"&since={since}" if since else "")
    return await node.request("GET", f"{V3}/sync{query}", user=user)


class RemoteKickTests(TestCase):
    timeout = 180

    async def test_a_remote_kick_reaches_the_long_poll_under_leave(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        bob = await hs2.register("bob")
        room_id = (await hs1.request("POST", f"{V3}/createRoom", {"preset": "public_chat"},
                                     user="alice"))["room_id"]
        assert hs2.server is not None
        for trial in range(3):
            await hs2.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(hs1.name)}", {},
                              user="bob")
            await eventually(lambda: self._is(hs1, room_id, bob, "join"))
            since = (await _sync(hs2, "bob"))["next_batch"]
            await _sync(hs2, "bob", since)  # Bob's rooms are cached
            poll = defer.ensureDeferred(_sync(hs2, "bob", since, timeout_ms=60_000))
            await task.deferLater(reactor, 0.05, lambda: None)
            await hs1.request("POST", f"{V3}/rooms/{q(room_id)}/kick", {"user_id": bob},
                              user="alice")
            body = await poll
            while room_id not in body["rooms"]["leave"]:  # an earlier answer (e.g. presence)
                self.assertNotIn(room_id, body["rooms"]["join"], f"trial {trial}")
                body = await _sync(hs2, "bob", body["next_batch"], timeout_ms=60_000)
            self.assertNotIn(room_id, body["rooms"]["join"], f"trial {trial}")
            last = body["rooms"]["leave"][room_id]["timeline"]["events"][-1]
            self.assertEqual((last["type"], last["state_key"], last["content"]["membership"]),
                             ("m.room.member", bob, "leave"), f"trial {trial}")

    async def _is(self, node: FedNode, room_id: str, user_id: str, membership: str) -> bool:
        assert node.server is not None
        return await node.server.hs.engine.membership(room_id, user_id) == membership
