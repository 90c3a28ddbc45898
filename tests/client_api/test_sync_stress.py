"""Many clients at once against one server; every client's accumulated view checked against storage.

Users act concurrently (each one op at a time): create rooms, invite, join,
leave, kick, ban, unban, send, redact, type, send receipts. Each user follows
its own view from the start, most with long-polling /sync and some over the
WebSocket. Then, against what storage holds:

- every event of a room at a position where the user was joined (from their
  join event up to and including the event that ended it) reached them exactly
  once, and no event reached them twice;
- each room sits in the right section at the end (join, invite, leave for
  leave and ban), and every membership event of the user arrived in the
  section it leads to (a kick or ban under `leave`, never under `join`);
- no request failed with a 5xx;
- every long poll was answered because something happened: the clock is
  frozen, so no poll can time out, and once the users stop, each follower's
  last token has nothing after it that a fresh sync would return (a poll that
  missed its wake-up would still be waiting with news behind it).

CI runs fixed seeds (`SEEDS`). `make stress` runs random seeds, longer:
ROOST_STRESS_SEED (a number or `random`), ROOST_STRESS_ROUNDS, ROOST_STRESS_OPS.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from roost.storage.room_pages import RoomPageStore
from roost.storage.room_state import RoomStateStore
from tests.client_api.test_websocket import Socket, connect_and_auth
from tests.server_harness import RunningServer, q, start_server

V3 = "/_matrix/client/v3"
SEEDS = (1, 2)
USERS = 6
SOCKET_USERS = 2  # the last two follow over the WebSocket
OPS_PER_USER = 25
FILTER = {"room": {"timeline": {"limit": 100}}}
SETTLE_ROUNDS = 60  # x 0.25 s of real time for the followers to drain what is already woken


@dataclass
class View:
    """What one client has accumulated from its syncs."""

    user_id: str
    since: str | None = None
    seen: Counter[str] = field(default_factory=Counter)  # event id -> times seen
    by_room: dict[str, list[str]] = field(default_factory=dict)
    section: dict[str, str] = field(default_factory=dict)  # room -> last section
    wrong: list[str] = field(default_factory=list)  # membership events in the wrong section

    def take(self, body: dict[str, Any], gaps: dict[str, list[dict[str, Any]]]) -> None:
        """One sync's answer; `gaps` holds, per room, what /messages filled in before
        a limited timeline (as a client does)."""
        rooms = body.get("rooms", {})
        for section in ("join", "leave"):
            for room_id, room in rooms.get(section, {}).items():
                self.section[room_id] = section
                timeline = gaps.get(room_id, []) + room.get("timeline", {}).get("events", [])
                for event in timeline:
                    self.seen[event["event_id"]] += 1
                    self.by_room.setdefault(room_id, []).append(event["event_id"])
                self._check_membership(section, timeline)
        for section in ("invite", "knock"):
            for room_id in rooms.get(section, {}):
                self.section[room_id] = section
        self.since = body["next_batch"]

    def gaps_to_fill(self, body: dict[str, Any]) -> list[tuple[str, str, str]]:
        """(room, prev_batch, the previous token) of the limited timelines of an
        incremental sync of a room the client already followed."""
        if self.since is None:
            return []
        out = []
        for section in ("join", "leave"):
            for room_id, room in body.get("rooms", {}).get(section, {}).items():
                timeline = room.get("timeline", {})
                if timeline.get("limited") and room_id in self.by_room:
                    out.append((room_id, timeline["prev_batch"], self.since))
        return out

    def _check_membership(self, section: str, timeline: list[dict[str, Any]]) -> None:
        """The user's last membership event in a room's timeline leads to its section
        (a join then a kick in one timeline sit under leave: the kick decides)."""
        mine = [e for e in timeline
                if e["type"] == "m.room.member" and e.get("state_key") == self.user_id]
        if not mine:
            return
        membership = mine[-1].get("content", {}).get("membership")
        expected = {"join": "join", "leave": "leave", "ban": "leave"}.get(membership)
        if expected is not None and expected != section:
            self.wrong.append(f"{mine[-1]['event_id']} ({membership}) under {section}")


class Follower:
    """Follows one user's view by long-polling /sync or over the socket until stopped."""

    def __init__(self, testcase: TestCase, server: RunningServer, token: str, view: View,
                 socket: bool) -> None:
        self._testcase, self._server, self._token = testcase, server, token
        self.view, self.socket = view, socket
        self.errors: list[str] = []
        self.stopped = False
        self._sock: Socket | None = None
        self._done: defer.Deferred[None] | None = None
        self._waiting: defer.Deferred[dict[str, Any]] | None = None

    async def start(self) -> None:
        if self.socket:
            self._sock = await connect_and_auth(self._testcase, self._server, self._token)
            self._sock.send({"op": "sync", "since": None, "filter": FILTER})
            self.view.take(await self._next_sync(), {})
        else:
            self.view.take(await self._poll(None, 0), {})
        self._done = defer.ensureDeferred(self._run())

    async def _next_sync(self) -> dict[str, Any]:
        assert self._sock is not None
        while True:
            frame = await self._sock.factory.frames.get()
            if frame.get("type") == "sync":
                return {**frame["body"], "next_batch": frame["next_batch"]}
            if frame.get("type") not in ("ready", None) and "error" in frame:
                self.errors.append(json.dumps(frame))

    async def _poll(self, since: str | None, timeout_ms: int) -> dict[str, Any]:
        query = f"?timeout={timeout_ms}&filter={q(json.dumps(FILTER))}"
        if since:
            query += f"&since={since}"
        resp = await self._server.request("GET", V3 + "/sync" + query, token=self._token)
        if resp.status != 200:
            self.errors.append(f"/sync {resp.status} {resp.body}")
            raise RuntimeError(self.errors[-1])
        return dict(resp.body)

    async def _run(self) -> None:
        while not self.stopped:
            self._waiting = defer.ensureDeferred(
                self._next_sync() if self.socket else self._poll(self.view.since, 3_600_000))
            try:
                body = await self._waiting
            except Exception:
                if self.stopped:
                    return  # the poll dropped by stop()
                raise
            if self.stopped:
                return
            self.view.take(body, await self._fill_gaps(body))

    async def _fill_gaps(self, body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Page back from each limited timeline to the previous token, with the tokens
        sync gave (prev_batch as `from`, the old next_batch as `to`)."""
        gaps: dict[str, list[dict[str, Any]]] = {}
        for room_id, prev_batch, since in self.view.gaps_to_fill(body):
            events: list[dict[str, Any]] = []
            start = prev_batch
            while True:
                resp = await self._server.request(
                    "GET", V3 + f"/rooms/{room_id}/messages?dir=b&limit=100&from={start}"
                    f"&to={since}", token=self._token)
                if resp.status != 200:
                    self.errors.append(f"/messages {resp.status} {resp.body}")
                    break
                events = list(reversed(resp.body["chunk"])) + events
                if "end" not in resp.body:
                    break
                start = resp.body["end"]
            gaps[room_id] = events
        return gaps

    async def stop(self) -> None:
        """Stop following: the poll in flight is dropped (it would wait forever)."""
        self.stopped = True
        if self._waiting is not None:
            self._waiting.cancel()
        if self._done is not None:
            await self._done
        if self._sock is not None:
            await self._sock.shut()

    async def behind(self) -> bool:
        """Whether a fresh sync from this follower's token has news it has not been woken for."""
        body = await self._poll(self.view.since, 0)
        rooms = body["rooms"]
        return any(rooms.get(k) for k in ("join", "invite", "leave", "knock"))


class Actors:
    """The users' concurrent actions, chosen by a seeded random source."""

    def __init__(self, server: RunningServer, clock: task.Clock, tokens: dict[str, str],
                 rng: random.Random) -> None:
        self._server, self._clock, self._tokens, self._rng = server, clock, tokens, rng
        self.rooms: list[str] = []
        self.sent: dict[str, list[tuple[str, str]]] = {}  # user -> [(room, event id)]
        self.server_errors: list[str] = []
        self._txn = 0

    async def _call(self, user: str, method: str, path: str, body: Any = None) -> Any:
        resp = await self._server.request(method, V3 + path, body, token=self._tokens[user])
        if resp.status >= 500:
            self.server_errors.append(f"{user} {method} {path}: {resp.status} {resp.body}")
        return resp

    async def act(self, user: str, ops: int) -> None:
        for _ in range(ops):
            await self._one(user)
            self._clock.advance(0.002)  # one user's two creations never share an instant

    async def _one(self, user: str) -> None:
        rng = self._rng
        others = [u for u in self._tokens if u != user]
        op = rng.choices(
            ["create", "invite", "join", "leave", "kick", "ban", "unban", "send", "redact",
             "typing", "receipt"],
            [6, 8, 10, 5, 4, 2, 1, 30, 5, 4, 5])[0]
        if op == "create" or not self.rooms:
            invite = rng.sample(others, rng.randint(0, 2))
            resp = await self._call(user, "POST", "/createRoom",
                                    {"preset": "public_chat", "invite": invite})
            if resp.status == 200:
                self.rooms.append(resp.body["room_id"])
            return
        room = rng.choice(self.rooms)
        target = rng.choice(others)
        self._txn += 1
        txn = f"t{self._txn}"
        if op == "invite":
            await self._call(user, "POST", f"/rooms/{room}/invite", {"user_id": target})
        elif op == "join":
            await self._call(user, "POST", f"/rooms/{room}/join", {})
        elif op == "leave":
            await self._call(user, "POST", f"/rooms/{room}/leave", {})
        elif op in ("kick", "ban", "unban"):
            await self._call(user, "POST", f"/rooms/{room}/{op}", {"user_id": target,
                                                                   "reason": op})
        elif op == "send":
            resp = await self._call(user, "PUT", f"/rooms/{room}/send/m.room.message/{txn}",
                                    {"msgtype": "m.text", "body": txn})
            if resp.status == 200:
                self.sent.setdefault(user, []).append((room, resp.body["event_id"]))
        elif op == "redact":
            mine = self.sent.get(user, [])
            if mine:
                room, event_id = rng.choice(mine)
                await self._call(user, "PUT", f"/rooms/{room}/redact/{event_id}/{txn}", {})
        elif op == "typing":
            await self._call(user, "PUT", f"/rooms/{room}/typing/{q(user)}",
                             {"typing": rng.random() < 0.7, "timeout": 20000})
        elif op == "receipt":
            mine = [e for r, e in self.sent.get(rng.choice(others), []) if r == room]
            if mine:
                await self._call(user, "POST", f"/rooms/{room}/receipt/m.read/{mine[-1]}", {})


def _frozen_clock() -> task.Clock:
    clock = task.Clock()
    clock.advance(reactor.seconds())  # type: ignore[attr-defined]
    return clock


async def _pause(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


class SyncStressTests(TestCase):
    timeout = 600
    checked = 0

    async def test_fixed_seeds(self) -> None:
        raw_seed = os.environ.get("ROOST_STRESS_SEED")
        rounds = int(os.environ.get("ROOST_STRESS_ROUNDS", "1"))
        ops = int(os.environ.get("ROOST_STRESS_OPS", str(OPS_PER_USER)))
        for i in range(rounds):
            if raw_seed is None:
                seeds: tuple[int, ...] = SEEDS
            elif raw_seed == "random":
                seeds = (random.SystemRandom().randrange(1 << 30),)
            else:
                seeds = (int(raw_seed) + i,)
            for seed in seeds:
                await self._one_seed(seed, ops)

    async def _one_seed(self, seed: int, ops: int) -> None:
        clock = _frozen_clock()
        server = await start_server(self, clock=clock)
        tokens: dict[str, str] = {}
        for i in range(USERS):
            tokens[f"@u{i}:test.roost"] = (await server.register(f"u{i}"))["access_token"]
        followers = []
        for n, (user, token) in enumerate(tokens.items()):
            follower = Follower(self, server, token, View(user), socket=n >= USERS - SOCKET_USERS)
            await follower.start()
            followers.append(follower)
        actors = Actors(server, clock, tokens, random.Random(seed))
        await defer.gatherResults([defer.ensureDeferred(actors.act(u, ops)) for u in tokens],
                                  consumeErrors=True)
        where = f"seed {seed}"
        try:
            self.assertEqual(actors.server_errors, [], where)
            await self._settle(followers, where)
        finally:
            for follower in followers:
                await follower.stop()
            await _pause(0.2)  # the dropped polls' connections close
        self.checked = 0
        for follower in followers:
            self.assertEqual(follower.errors, [], where)
            await self._check(server, follower.view, where)
        # Not vacuous: the workload made the users owe each other many events.
        self.assertGreater(self.checked, 20 * USERS, where)
        await server.stop()

    async def _settle(self, followers: list[Follower], where: str) -> None:
        """Let woken followers drain; any still behind afterwards missed a wake-up."""
        behind: list[str] = []
        for _ in range(SETTLE_ROUNDS):
            await _pause(0.25)
            behind = [f.view.user_id for f in followers if await f.behind()]
            if not behind:
                return
        self.fail(f"{where}: followers never woken for news after their token: {behind}")

    async def _check(self, server: RunningServer, view: View, where: str) -> None:
        where = f"{where}, {view.user_id}"
        twice = [e for e, n in view.seen.items() if n > 1]
        self.assertEqual(twice, [], f"{where}: events seen more than once")
        self.assertEqual(view.wrong, [], f"{where}: membership events in the wrong section")
        state = RoomStateStore(server.hs.db)
        final = await state.rooms_for_user(view.user_id, ("join", "invite", "leave", "ban"))
        for room_id, membership in final.items():
            expected = {"join": "join", "invite": "invite", "leave": "leave",
                        "ban": "leave"}[membership]
            self.assertEqual(view.section.get(room_id), expected,
                             f"{where}: {room_id} ends {membership}")
            owed = await self._owed(server, state, room_id, view.user_id)
            got = set(view.by_room.get(room_id, []))
            self.checked += len(owed)
            missing = [e for e in owed if e not in got]
            if missing:  # what a failure needs to be read: the user's memberships, the gaps
                history = await state.membership_history(room_id, view.user_id)
                at = {e: p for p, e in await _room_positions(server, room_id)}
                self.fail(f"{where}: {room_id} events never delivered: "
                          f"{[(at[e], e) for e in missing]}; memberships {history}")

    async def _owed(self, server: RunningServer, state: RoomStateStore, room_id: str,
                    user_id: str) -> list[str]:
        """Events the user must have seen: from each join up to the event that ended it."""
        history = await state.membership_history(room_id, user_id)
        positions = await _room_positions(server, room_id)
        owed = []
        for i, (position, membership) in enumerate(history):
            if membership != "join":
                continue
            end = history[i + 1][0] if i + 1 < len(history) else None
            owed += [eid for pos, eid in positions
                     if pos >= position and (end is None or pos <= end)]
        return owed


async def _room_positions(server: RunningServer, room_id: str) -> list[tuple[int, str]]:
    """(position, event id) of every event in the room's timeline, from storage."""
    store = RoomPageStore(server.hs.db)
    page = await store.room_stream_events(room_id, -(1 << 62), None, False, 100_000)
    return [(e.stream_ordering or 0, e.event_id) for e in page]
