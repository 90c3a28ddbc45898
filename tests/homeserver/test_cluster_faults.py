"""Faults of a several-process layout (issue 17), on real processes: kill -9 of an event
writer or a client process under send load loses no acknowledged event, the others keep
serving, the restarted one catches up, and sends for a dead writer's rooms get a clear
error at once; Redis going away and coming back: the processes keep serving and wake-ups
resume. The processes share a redis-server of the test's own."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import treq
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from roost.homeserver.roles import writer_of_room
from tests.cluster_harness import Cluster, private_redis, start_cluster

V3 = "/_matrix/client/v3"
WRITERS = ["writer1", "writer2"]
LAYOUT = {
    "writer1": ["event_writer", "pusher", "appservice", "background", "federation_sender"],
    "writer2": ["event_writer"],
    "reader1": ["client"],
    "reader2": ["client"],
}


class Http:
    def __init__(self) -> None:
        self.client = treq.client.HTTPClient(Agent(reactor, pool=HTTPConnectionPool(
            reactor, persistent=False)))

    async def call(self, base: str, method: str, path: str, body: Any = None,
                   token: str | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = await self.client.request(
            method, base + path, data=None if body is None else json.dumps(body).encode(),
            headers=headers, timeout=60)
        return response.code, json.loads(await response.content())

    async def ok(self, base: str, method: str, path: str, body: Any = None,
                 token: str | None = None) -> Any:
        code, answer = await self.call(base, method, path, body, token)
        assert code == 200, (method, path, code, answer)
        return answer


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def rooms_on_both_writers(http: Http, base: str) -> tuple[str, dict[str, str]]:
    """A user with a room on each writer (a room is built by the writer its id maps to;
    who creates it decides which writer builds it)."""
    owner = await http.ok(base, "POST", V3 + "/register", {
        "username": "owner", "password": "pw-owner-long", "auth": {"type": "m.login.dummy"}})
    rooms: dict[str, str] = {}
    for i in range(12):
        creator = await http.ok(base, "POST", V3 + "/register", {
            "username": f"c{i}", "password": "pw-creator-long",
            "auth": {"type": "m.login.dummy"}})
        room = (await http.ok(base, "POST", V3 + "/createRoom",
                              {"preset": "public_chat"}, creator["access_token"]))["room_id"]
        rooms.setdefault(writer_of_room(room, WRITERS), room)
        if len(rooms) == 2:
            break
    for room in rooms.values():
        await http.ok(base, "POST", f"{V3}/rooms/{quote(room)}/join", {},
                      owner["access_token"])
    return owner["access_token"], rooms


async def all_event_ids(http: Http, base: str, room: str, token: str,
                        event_type: str | None = None) -> set[str]:
    """Every event of `room` (of `event_type`, if given) that /messages at `base` gives,
    paging back to the start."""
    ids: set[str] = set()
    path = f"{V3}/rooms/{quote(room)}/messages?dir=b&limit=100"
    for _ in range(20):
        page = await http.ok(base, "GET", path, token=token)
        ids |= {e["event_id"] for e in page["chunk"]
                if event_type is None or e["type"] == event_type}
        if "end" not in page or not page["chunk"]:
            return ids
        path = f"{V3}/rooms/{quote(room)}/messages?dir=b&limit=100&from={page['end']}"
    return ids


MAX_SENDS = 400  # per sender: a bound, never reached unless the kill never happens
AFTER_KILL = 5  # sends per sender made wholly after writer2's kill


class WriterAndReaderKillTests(TestCase):
    timeout = 300

    async def test_kill_9_of_a_writer_and_a_reader_under_send_load(self) -> None:
        redis = await private_redis(self)
        cluster = await start_cluster(self, LAYOUT, redis={"port": redis.port})
        http = Http()
        r1, r2 = cluster.instances["reader1"].client_url, cluster.instances["reader2"].client_url
        token, rooms = await rooms_on_both_writers(http, r1)
        self.assertEqual(set(rooms), set(WRITERS))
        acked: dict[str, list[str]] = {w: [] for w in WRITERS}
        refused: dict[str, list[tuple[int, str, float]]] = {w: [] for w in WRITERS}
        killed = defer.Deferred()

        async def sender(writer: str, base: str, tag: str) -> None:
            """Sends until AFTER_KILL sends have been answered after writer2's kill, so
            the kill falls inside the load however fast the machine is."""
            room = rooms[writer]
            after_kill = 0
            for i in range(MAX_SENDS):
                if after_kill >= AFTER_KILL:
                    return
                was_killed = killed.called
                started = time.monotonic()
                try:
                    code, answer = await http.call(
                        base, "PUT", f"{V3}/rooms/{quote(room)}/send/m.room.message/{tag}{i}",
                        {"msgtype": "m.text", "body": f"{tag} {i}"}, token)
                except Exception as e:  # the reader itself was killed mid-request
                    refused[writer].append((0, type(e).__name__, time.monotonic() - started))
                    continue
                finally:
                    after_kill += was_killed
                if code == 200:
                    acked[writer].append(answer["event_id"])
                else:
                    refused[writer].append((code, answer.get("errcode", ""),
                                            time.monotonic() - started))

        load = [defer.ensureDeferred(sender(w, base, f"{w}-{base[-5:]}-"))
                for w in WRITERS for base in (r1, r2)]
        while len(acked["writer2"]) < 5 and not any(d.called for d in load):
            await sleep(0.05)
        await cluster.kill("writer2")  # kill -9 in the middle of its rooms' sends
        killed.callback(None)
        await defer.gatherResults(load)
        # writer1's rooms were never refused; writer2's answered a clear 503, never hung.
        self.assertEqual(refused["writer1"], [])
        self.assertTrue(refused["writer2"], "writer2 was killed before any refusal")
        for code, errcode, seconds in refused["writer2"]:
            self.assertEqual((code, errcode), (503, "M_UNKNOWN"))
            self.assertLess(seconds, 30)
        # Kill a reader too; the other keeps serving and forwards to writer1.
        await cluster.kill("reader1")
        await http.ok(r2, "PUT", f"{V3}/rooms/{quote(rooms['writer1'])}/send/m.room.message/x",
                      {"msgtype": "m.text", "body": "reader1 is gone"}, token)

        await cluster.start("writer2")
        await cluster.start("reader1")
        await http.ok(r1, "PUT", f"{V3}/rooms/{quote(rooms['writer2'])}/send/m.room.message/y",
                      {"msgtype": "m.text", "body": "writer2 is back"}, token)
        # Every acknowledged event is there, readable from both readers, in its room.
        for writer, room in rooms.items():
            for base in (r1, r2):
                ids = await all_event_ids(http, base, room, token)
                missing = [e for e in acked[writer] if e not in ids]
                self.assertEqual(missing, [], f"{writer}'s acknowledged events lost at {base}")


class RedisRestartTests(TestCase):
    timeout = 300

    async def test_processes_keep_serving_without_redis_and_wake_ups_resume(self) -> None:
        redis = await private_redis(self)
        cluster = await start_cluster(self, {
            "writer1": ["event_writer", "pusher", "appservice", "background",
                        "federation_sender"],
            "reader1": ["client"]}, redis={"port": redis.port})
        http = Http()
        base = cluster.instances["reader1"].client_url
        user = await http.ok(base, "POST", V3 + "/register", {
            "username": "alice", "password": "pw-alice-long", "auth": {"type": "m.login.dummy"}})
        token = user["access_token"]
        room = (await http.ok(base, "POST", V3 + "/createRoom", {}, token))["room_id"]
        since = (await http.ok(base, "GET", V3 + "/sync", token=token))["next_batch"]

        await redis.stop()
        # Sends still go to the writer; a long-poll still wakes (positions polled from
        # the database while Redis is away).
        woken = await _woken_by_send(http, base, base, room, token, since, "redis is down")

        subscribed = cluster.log("reader1").count("replication bus subscribed")
        await redis.start()
        for _ in range(300):  # the bus reconnects by itself (within seconds; 30 s at most)
            if cluster.log("reader1").count("replication bus subscribed") > subscribed:
                break
            await sleep(0.1)
        else:
            self.fail("reader1 never subscribed again after Redis came back")
        await _woken_by_send(http, base, base, room, token, woken["next_batch"], "redis is back")


class RedisAbsentAtStartTests(TestCase):
    timeout = 300

    async def test_processes_start_and_serve_without_redis_and_join_the_bus_when_it_appears(
            self) -> None:
        redis = await private_redis(self, started=False)  # nothing listens on its port yet
        cluster = await start_cluster(self, {
            "writer1": ["event_writer", "pusher", "appservice", "background",
                        "federation_sender"],
            "reader1": ["client"], "reader2": ["client"]}, redis={"port": redis.port})
        http = Http()
        r1, r2 = cluster.instances["reader1"].client_url, cluster.instances["reader2"].client_url
        user = await http.ok(r1, "POST", V3 + "/register", {
            "username": "alice", "password": "pw-alice-long", "auth": {"type": "m.login.dummy"}})
        token = user["access_token"]
        room = (await http.ok(r1, "POST", V3 + "/createRoom", {}, token))["room_id"]
        since = (await http.ok(r2, "GET", V3 + "/sync", token=token))["next_batch"]
        # A long-poll at one reader woken by a send through the other: positions polled.
        woken = await _woken_by_send(http, r2, r1, room, token, since, "no redis yet")

        await redis.start()
        for name in ("writer1", "reader1", "reader2"):
            await _logged(cluster, name, "replication bus subscribed")
        # Typing crosses processes only on the bus: set at reader1, seen at reader2. (Said
        # again each round: one said before reader1's publishing connection is up is lost.)
        since, typing = woken["next_batch"], []
        for _ in range(10):  # long-polls, until one carries the typing notification
            await http.ok(r1, "PUT",
                          f"{V3}/rooms/{quote(room)}/typing/{quote(user['user_id'])}",
                          {"typing": True, "timeout": 60000}, token)
            got = await http.ok(r2, "GET", f"{V3}/sync?timeout=5000&since={since}", token=token)
            since = got["next_batch"]
            ephemeral = got.get("rooms", {}).get("join", {}).get(room, {}).get("ephemeral", {})
            typing = [e["content"]["user_ids"] for e in ephemeral.get("events", [])
                      if e["type"] == "m.typing"]
            if typing:
                break
        self.assertEqual(typing, [[user["user_id"]]])


async def _woken_by_send(http: Http, waiter: str, sender: str, room: str, token: str,
                         since: str, body: str) -> Any:
    """A long-poll /sync at `waiter` woken by a message `body` sent through `sender` (the
    waiter may first wake for earlier writes it learns of late, when polling: it polls on)."""
    waiting = defer.ensureDeferred(http.ok(
        waiter, "GET", f"{V3}/sync?timeout=30000&since={since}", token=token))
    await http.ok(sender, "PUT", f"{V3}/rooms/{quote(room)}/send/m.room.message/{quote(body)}",
                  {"msgtype": "m.text", "body": body}, token)
    woken = await waiting
    for _ in range(5):
        if body in json.dumps(woken.get("rooms", {}).get("join", {}).get(room, {})):
            return woken
        woken = await http.ok(waiter, "GET", f"{V3}/sync?timeout=30000"
                              f"&since={woken['next_batch']}", token=token)
    raise AssertionError(f"{body!r} never reached {waiter}: {woken}")


async def _logged(cluster: Cluster, name: str, text: str) -> None:
    """Wait (at most a minute) until instance `name` logged `text`."""
    for _ in range(600):
        if text in cluster.log(name):
            return
        await sleep(0.1)
    raise AssertionError(f"{name} never logged {text!r}:\n{cluster.log(name)[-3000:]}")
