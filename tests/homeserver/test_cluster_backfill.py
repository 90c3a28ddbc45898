"""History backfilled by one process, read through another (issue 17): backfilled events
take positions below zero, so the events stream never announces them; the room's writer
tells the other processes on the bus, which drop their cached heads of the room (its
history-visibility changes, its served state) before they serve it again.

Real processes (a writer with the federation roles, two readers) and a remote Roost
holding the room's history."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.trial.unittest import TestCase

from tests.cluster_harness import private_redis, start_cluster
from tests.federation.two_servers import start_node
from tests.homeserver.test_cluster_faults import V3, Http

LAYOUT = {
    "writer1": ["event_writer", "federation_inbound", "federation_sender", "pusher",
                "appservice", "background"],
    "reader1": ["client"],
    "reader2": ["client"],
}


def _bodies(page: dict[str, Any]) -> list[str]:
    return [e["content"].get("body", "") for e in page["chunk"] if e["type"] == "m.room.message"]


class BackfillAcrossProcessesTests(TestCase):
    timeout = 300

    async def test_history_backfilled_through_one_reader_is_judged_alike_by_the_other(
            self) -> None:
        remote = await start_node(self)
        redis = await private_redis(self)
        cluster = await start_cluster(self, LAYOUT, redis={"port": redis.port})
        http = Http()
        r1, r2 = cluster.instances["reader1"].client_url, cluster.instances["reader2"].client_url
        # The room's history on the remote server: "m0" while history was shared, then
        # visibility "joined" and "m1", which a later joiner may not read.
        await remote.register("alice")
        room = (await remote.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                     user="alice"))["room_id"]
        await remote.request("PUT", f"{V3}/rooms/{quote(room)}/send/m.room.message/0",
                             {"msgtype": "m.text", "body": "m0"}, user="alice")
        await remote.request("PUT", f"{V3}/rooms/{quote(room)}/state/m.room.history_visibility/",
                             {"history_visibility": "joined"}, user="alice")
        await remote.request("PUT", f"{V3}/rooms/{quote(room)}/send/m.room.message/1",
                             {"msgtype": "m.text", "body": "m1"}, user="alice")
        bob = await http.ok(r1, "POST", V3 + "/register", {
            "username": "bob", "password": "pw-bob-long", "auth": {"type": "m.login.dummy"}})
        token = bob["access_token"]
        await http.ok(r1, "POST", f"{V3}/join/{quote(room)}?server_name={quote(remote.name)}",
                      {}, token)
        # reader2 reads the room (a full page: no backfill), caching what it judged by.
        newest = await http.ok(r2, "GET", f"{V3}/rooms/{quote(room)}/messages?dir=b&limit=1",
                               token=token)
        self.assertEqual(len(newest["chunk"]), 1)
        # reader1 pages back: short of events, it backfills (stored by the writer).
        path = f"{V3}/rooms/{quote(room)}/messages?dir=b&limit=50"
        through_r1 = await http.ok(r1, "GET", path, token=token)
        self.assertEqual(_bodies(through_r1), ["m0"])  # shared history, not "m1"
        through_r2 = await http.ok(r2, "GET", path, token=token)
        self.assertEqual(_bodies(through_r2), ["m0"])
        self.assertEqual([e["event_id"] for e in through_r2["chunk"]],
                         [e["event_id"] for e in through_r1["chunk"]])
