"""Two homeservers on one database sharing Redis (issue 17): a writer and a client reader.

A long-poll /sync at the reader wakes on a send at the writer and gets the
event exactly once; state cached at the reader follows the writer's changes;
typing crosses over; a logout at one refuses the token at the other.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import psycopg2
from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from roost.homeserver.roles import Roles
from roost.homeserver.wiring import build_homeserver
from tests.contrib.test_nginx import free_port
from tests.postgres_harness import fresh_database
from tests.redis_harness import _free_port, _spawn, _stop, _wait_until_up, isolated_redis
from tests.server_harness import RunningServer, _as_deferred, q, test_config
from tests.storage.test_replication import until

V3 = "/_matrix/client/v3"


def _workers(internal_port: int) -> dict[str, Any]:
    return {
        "shared_secret": "a-secret-for-tests",
        "instances": {
            "writer": {"roles": ["client", "event_writer", "pusher", "appservice", "background",
                                 "federation_sender", "media", "federation_inbound"],
                       "internal": {"port": internal_port}},
            "reader": {"roles": ["client"]},
        },
        "event_writers": ["writer"],
        "federation_senders": ["writer"],
    }


class TwoProcessTests(TestCase):
    timeout = 120

    async def _cluster(self, redis_port: int | None = None
                       ) -> tuple[RunningServer, RunningServer]:
        dsn = await fresh_database(self)
        if redis_port is None:
            redis = await isolated_redis(self)
            redis_at = (redis.host, redis.port, redis.prefix)
        else:
            redis_at = ("127.0.0.1", redis_port, "roost-test:")
        data_dir = self.mktemp()
        internal_port = free_port()
        servers = []
        for name in ("writer", "reader"):
            config = test_config(
                data_dir, workers=_workers(internal_port),
                redis={"enabled": True, "host": redis_at[0], "port": redis_at[1],
                       "key_prefix": redis_at[2]}).for_worker(name)
            servers.append(await _start_worker(self, config, dsn, internal_port))
        return servers[0], servers[1]

    async def _room(self, writer: RunningServer) -> tuple[dict[str, Any], dict[str, Any], str]:
        alice = await writer.register("alice")
        bob = await writer.register("bob")
        room = (await writer.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                     token=alice["access_token"])).body["room_id"]
        joined = await writer.request("POST", f"{V3}/rooms/{q(room)}/join", {},
                                      token=bob["access_token"])
        self.assertEqual(joined.status, 200, joined.body)
        return alice, bob, room

    async def _caught_up(self, writer: RunningServer, reader: RunningServer) -> None:
        target = writer.hs.streams["events"].current
        await until(lambda: reader.hs.streams["events"].current >= target, "reader catches up")

    async def test_a_long_poll_at_the_reader_wakes_on_a_send_at_the_writer(self) -> None:
        writer, reader = await self._cluster()
        alice, bob, room = await self._room(writer)
        await self._caught_up(writer, reader)
        first = await reader.request("GET", V3 + "/sync", token=bob["access_token"])
        self.assertIn(room, first.body["rooms"]["join"])
        since = first.body["next_batch"]
        poll = defer.ensureDeferred(reader.request(
            "GET", f"{V3}/sync?since={q(since)}&timeout=60000", token=bob["access_token"]))
        sent = await writer.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/t1",
                                    {"msgtype": "m.text", "body": "across"},
                                    token=alice["access_token"])
        woken = await poll
        timeline = woken.body["rooms"]["join"][room]["timeline"]["events"]
        self.assertEqual([e["event_id"] for e in timeline], [sent.body["event_id"]])
        again = await reader.request(
            "GET", f"{V3}/sync?since={q(woken.body['next_batch'])}&timeout=0",
            token=bob["access_token"])
        self.assertNotIn(room, again.body.get("rooms", {}).get("join", {}))

    async def test_wake_ups_survive_a_redis_restart(self) -> None:
        port, workdir = _free_port(), Path(tempfile.mkdtemp(prefix="roost-redis-"))
        self.addCleanup(shutil.rmtree, workdir, True)
        server = await self._redis(workdir, port, "first")
        writer, reader = await self._cluster(port)
        alice, bob, room = await self._room(writer)
        await self._caught_up(writer, reader)
        since = (await reader.request("GET", V3 + "/sync", token=bob["access_token"])
                 ).body["next_batch"]
        _stop(server)  # Redis is gone: sends still answer, the reader polls the positions
        for txn in ("during", "after"):
            poll = defer.ensureDeferred(reader.request(
                "GET", f"{V3}/sync?since={q(since)}&timeout=60000", token=bob["access_token"]))
            sent = await _send(writer, alice, room, txn)
            woken = await poll
            timeline = woken.body["rooms"]["join"][room]["timeline"]["events"]
            self.assertEqual([e["event_id"] for e in timeline], [sent])
            since = woken.body["next_batch"]
            if txn == "during":
                await self._redis(workdir, port, "second")
                await until(lambda: self._subscribed(writer) and self._subscribed(reader),
                            "both processes subscribe again", 30)

    @staticmethod
    def _subscribed(server: RunningServer) -> bool:
        return bool(server.hs.replication is not None and server.hs.replication.bus.connected)

    async def _redis(self, workdir: Path, port: int, name: str) -> Any:
        proc = _spawn(workdir, port, workdir / f"{name}.log")
        self.addCleanup(_stop, proc)
        self.assertTrue(await _wait_until_up(proc, port))
        return proc

    async def test_state_cached_at_the_reader_follows_the_writer(self) -> None:
        writer, reader = await self._cluster()
        alice, bob, room = await self._room(writer)
        for name in ("first", "second"):
            put = await writer.request("PUT", f"{V3}/rooms/{q(room)}/state/m.room.name/",
                                       {"name": name}, token=alice["access_token"])
            self.assertEqual(put.status, 200, put.body)
            await self._caught_up(writer, reader)
            got = await reader.request("GET", f"{V3}/rooms/{q(room)}/state/m.room.name/",
                                       token=bob["access_token"])
            self.assertEqual(got.body, {"name": name})

    async def test_typing_at_the_writer_reaches_a_sync_at_the_reader(self) -> None:
        writer, reader = await self._cluster()
        alice, bob, room = await self._room(writer)
        await self._caught_up(writer, reader)
        since = (await reader.request("GET", V3 + "/sync", token=bob["access_token"])
                 ).body["next_batch"]
        poll = defer.ensureDeferred(reader.request(
            "GET", f"{V3}/sync?since={q(since)}&timeout=60000", token=bob["access_token"]))
        typed = await writer.request("PUT", f"{V3}/rooms/{q(room)}/typing/{q(alice['user_id'])}",
                                     {"typing": True, "timeout": 30000},
                                     token=alice["access_token"])
        self.assertEqual(typed.status, 200, typed.body)
        woken = await poll
        ephemeral = woken.body["rooms"]["join"][room]["ephemeral"]["events"]
        self.assertIn({"type": "m.typing", "content": {"user_ids": [alice["user_id"]]}},
                      ephemeral)

    async def test_a_logout_at_one_process_refuses_the_token_at_the_other(self) -> None:
        writer, reader = await self._cluster()
        alice = await writer.register("alice")
        whoami = await reader.request("GET", V3 + "/account/whoami", token=alice["access_token"])
        self.assertEqual(whoami.status, 200)
        out = await writer.request("POST", V3 + "/logout", {}, token=alice["access_token"])
        self.assertEqual(out.status, 200)
        refused = await reader.request("GET", V3 + "/account/whoami", token=alice["access_token"])
        self.assertEqual((refused.status, refused.body["errcode"]), (401, "M_UNKNOWN_TOKEN"))

    async def test_a_push_rule_changed_at_the_reader_applies_at_the_writer(self) -> None:
        writer, reader = await self._cluster()  # the writer runs the push evaluator
        alice, bob, room = await self._room(writer)
        first = await _send(writer, alice, room, "t1")
        self.assertTrue(await self._notifies(writer, first, bob["user_id"]))
        muted = await reader.request("PUT", f"{V3}/pushrules/global/room/{q(room)}",
                                     {"actions": []}, token=bob["access_token"])
        self.assertEqual(muted.status, 200, muted.body)
        told = reader.hs.streams["account_data"].claim  # the m.push_rules account data
        await until(lambda: writer.hs.streams["account_data"].current >= told,
                    "the writer hears of the change")
        second = await _send(writer, alice, room, "t2")
        self.assertFalse(await self._notifies(writer, second, bob["user_id"]))

    async def _notifies(self, server: RunningServer, event_id: str, user_id: str) -> bool:
        """Whether the evaluator stored a notification of `event_id` for `user_id`."""
        db = server.hs.db
        [(position,)] = await db.run("pos", lambda t: t.query(
            "SELECT stream_ordering FROM events WHERE event_id = %s", (event_id,)))
        done: list[bool] = []

        async def evaluated() -> None:
            rows = await db.run("evaluated", lambda t: t.query(
                "SELECT stream_position FROM push_evaluator_position"))
            done.append(bool(rows) and rows[0][0] >= position)

        for _ in range(750):
            await evaluated()
            if done[-1]:
                break
            await task.deferLater(reactor, 0.02, lambda: None)
        self.assertTrue(done[-1], "the evaluator never reached the event")
        rows = await db.run("actions", lambda t: t.query(
            "SELECT 1 FROM push_actions WHERE event_id = %s AND %s = ANY(user_ids)",
            (event_id, user_id)))
        return bool(rows)

    async def test_both_processes_stored_their_positions(self) -> None:
        writer, reader = await self._cluster()
        await self._room(writer)
        claims = await writer.hs.db.run("claims", lambda t: t.query(
            "SELECT stream, instance FROM stream_positions ORDER BY 1, 2"))
        self.assertIn(("events", "writer"), claims)
        self.assertIn(("receipts", "reader"), claims)  # any instance may write receipts
        self.assertNotIn(("events", "reader"), claims)  # the reader only follows events




def _two_writers(ports: dict[str, int]) -> dict[str, Any]:
    return {
        "shared_secret": "a-secret-for-tests",
        "instances": {
            "w1": {"roles": ["client", "event_writer", "pusher", "appservice", "background",
                             "federation_sender", "media", "federation_inbound"],
                   "internal": {"port": ports["w1"]}},
            "w2": {"roles": ["client", "event_writer"], "internal": {"port": ports["w2"]}},
            "r": {"roles": ["client"]},
        },
        "event_writers": ["w1", "w2"],
        "federation_senders": ["w1"],
    }


WHOLE = '{"room": {"timeline": {"limit": 1000}}}'  # no timeline cut short


class TwoWriterTests(TestCase):
    """Two event writers persisting at once, a third process syncing: every event once."""

    timeout = 180

    async def _cluster(self) -> dict[str, RunningServer]:
        dsn = await fresh_database(self)
        redis = await isolated_redis(self)
        data_dir = self.mktemp()
        ports = {"w1": free_port(), "w2": free_port()}
        servers = {}
        for name in ("w1", "w2", "r"):
            config = test_config(
                data_dir, workers=_two_writers(ports),
                redis={"enabled": True, "host": redis.host, "port": redis.port,
                       "key_prefix": redis.prefix}).for_worker(name)
            servers[name] = await _start_worker(self, config, dsn, ports.get(name, 0))
        return servers

    async def test_a_reader_sees_every_event_of_both_writers_exactly_once(self) -> None:
        servers = await self._cluster()
        w1, w2, reader = servers["w1"], servers["w2"], servers["r"]
        alice = await w1.register("alice")
        bob = await w1.register("bob")
        rooms = []
        for writer in (w1, w2, w1, w2):  # createRoom at a writer builds a room it owns
            created = await writer.request("POST", V3 + "/createRoom",
                                           {"preset": "public_chat"}, token=alice["access_token"])
            self.assertEqual(created.status, 200, created.body)
            room = created.body["room_id"]
            joined = await writer.request("POST", f"{V3}/rooms/{q(room)}/join", {},
                                          token=bob["access_token"])
            self.assertEqual(joined.status, 200, joined.body)
            rooms.append((writer, room))
        owners = {r: Roles.from_config(reader.hs.config).writer_of(r) for _, r in rooms}
        self.assertEqual(set(owners.values()), {"w1", "w2"})
        # The reader learns of the writers' joins from the bus a moment later: until its
        # token covers all four, a later sync would rightly show a room newly joined (its
        # timeline `limited`, to say the state is whole), which is not what this test checks.
        for _ in range(300):  # a liveness bound: 60 s
            first = await reader.request("GET", V3 + "/sync", token=bob["access_token"])
            if {r for _, r in rooms} <= set(first.body.get("rooms", {}).get("join", {})):
                break
            await task.deferLater(reactor, 0.2, lambda: None)
        else:
            self.fail("the reader never saw the four joins")
        since = first.body["next_batch"]
        seen: list[str] = []
        done = False

        async def follow() -> None:
            nonlocal since
            while not done:
                got = await reader.request(
                    "GET", f"{V3}/sync?since={q(since)}&timeout=2000&filter={q(WHOLE)}",
                    token=bob["access_token"])
                for joined in got.body.get("rooms", {}).get("join", {}).values():
                    self.assertFalse(joined["timeline"].get("limited"))
                    seen.extend(e["event_id"] for e in joined["timeline"]["events"]
                                if e["type"] == "m.room.message")
                since = got.body["next_batch"]

        follower = defer.ensureDeferred(follow())

        async def send(writer: RunningServer, room: str, n: int) -> str:
            sent = await writer.request(
                "PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/{q(room)}-{n}",
                {"msgtype": "m.text", "body": str(n)}, token=alice["access_token"])
            self.assertEqual(sent.status, 200, sent.body)
            return sent.body["event_id"]

        sent = await defer.gatherResults([defer.ensureDeferred(send(w, r, n))
                                          for n in range(15) for w, r in rooms])
        # A liveness bound (a loaded machine runs the three processes' work on one
        # reactor here): the follower failing ends the wait at once, with its error.
        await until(lambda: set(sent) <= set(seen) or follower.called,
                    "the reader sees every event", 150)
        done = True
        await follower
        self.assertLessEqual(set(sent), set(seen))
        self.assertEqual(sorted(seen), sorted(sent))  # each exactly once
        positions = await reader.hs.db.run("positions", lambda t: t.query(
            "SELECT stream_ordering FROM events WHERE event_id = ANY(%s)", (sent,)))
        self.assertEqual(len({p for (p,) in positions}), len(sent))

    async def test_a_write_committing_late_in_one_writer_is_not_skipped(self) -> None:
        servers = await self._cluster()
        w1, w2, reader = servers["w1"], servers["w2"], servers["r"]
        alice = await w1.register("alice")
        bob = await w1.register("bob")
        rooms = {}
        for name, writer in (("w1", w1), ("w2", w2)):
            room = (await writer.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                         token=alice["access_token"])).body["room_id"]
            await writer.request("POST", f"{V3}/rooms/{q(room)}/join", {},
                                 token=bob["access_token"])
            rooms[name] = room
        await _send(w1, alice, rooms["w1"], "first")
        await self._all_caught_up(servers)
        since = (await reader.request("GET", V3 + "/sync", token=bob["access_token"])
                 ).body["next_batch"]
        # w2's next write is held inside its transaction (a row it must delete is
        # locked), while w1 writes after it.
        lock = await threads.deferToThread(_lock_extremities, reader.hs.db.dsn, rooms["w2"])
        self.addCleanup(lock.close)  # (a rollback, if the test ended before it)
        late = defer.ensureDeferred(_send(w2, alice, rooms["w2"], "late"))
        await self._lock_waited_for(reader)
        early = await _send(w1, alice, rooms["w1"], "early")
        now = await reader.request("GET", f"{V3}/sync?since={q(since)}&timeout=0",
                                   token=bob["access_token"])
        seen = _messages(now.body)
        self.assertNotIn(early, seen)  # readable only once w2's earlier position commits
        await threads.deferToThread(lock.rollback)
        late_id = await late
        for _ in range(100):
            since = now.body["next_batch"]
            now = await reader.request("GET", f"{V3}/sync?since={q(since)}&timeout=5000",
                                       token=bob["access_token"])
            seen += _messages(now.body)
            if {early, late_id} <= set(seen):
                break
        self.assertEqual(sorted(seen), sorted([early, late_id]))

    async def _all_caught_up(self, servers: dict[str, RunningServer]) -> None:
        top = max(max(s.hs.streams["events"].claims().values()) for s in servers.values())
        await until(lambda: all(s.hs.streams["events"].current >= top
                                for s in servers.values()), "every process caught up")

    async def _lock_waited_for(self, server: RunningServer) -> None:
        for _ in range(500):
            rows = await server.hs.db.run("waiting", lambda t: t.query(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"))
            if rows:
                return
            await task.deferLater(reactor, 0.02, lambda: None)
        raise AssertionError("w2's write never waited for the lock")


async def _send(server: RunningServer, user: dict[str, Any], room: str, txn: str) -> str:
    """A text message `txn` from `user` through `server`; its event id."""
    sent = await server.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/{txn}",
                                {"msgtype": "m.text", "body": txn}, token=user["access_token"])
    assert sent.status == 200, (sent.status, sent.body)
    return sent.body["event_id"]


def _messages(body: dict[str, Any]) -> list[str]:
    return [e["event_id"] for joined in body.get("rooms", {}).get("join", {}).values()
            for e in joined["timeline"]["events"] if e["type"] == "m.room.message"]


def _lock_extremities(dsn: str, room: str) -> Any:
    """A connection holding the room's forward extremity rows (a persist deletes them)."""
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM forward_extremities WHERE room_id = %s FOR UPDATE", (room,))
    return conn


async def _start_worker(test: TestCase, config: Any, dsn: str,
                        internal_port: int) -> RunningServer:
    """One worker of the cluster in this process: its client listener on a free port and,
    for a writer, its internal listener on `internal_port`; both stopped at cleanup."""
    hs = await build_homeserver(config, reactor, dsn=dsn)
    port = reactor.listenTCP(0, hs.client_site, interface="127.0.0.1")
    server = RunningServer(hs, f"http://127.0.0.1:{port.getHost().port}", port,
                           HTTPConnectionPool(reactor, persistent=False))
    test.addCleanup(lambda: _as_deferred(server.stop()))
    if hs.internal_site is not None:
        internal = reactor.listenTCP(internal_port, hs.internal_site, interface="127.0.0.1")
        test.addCleanup(internal.stopListening)
    return server
