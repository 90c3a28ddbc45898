"""The access table for servers, and server ACLs, between two real Roost servers over TLS.

Server A hosts one room per history visibility. Alice sends "before"; then,
for the `joined late` rows, a user of server B joins and alice sends "after".
Server B's own signed federation client asks A's federation read paths
directly. A server with no member (`no member`) asks the same of a room B
never joined; a server that left (`left`), of a room B's user joined after
"before" and left after "after".

Each row of SERVER_TABLE is (endpoint, server state, answers under shared,
invited, joined, world_readable): DENIED (403 M_FORBIDDEN), or what the probe
reads off a 200: the message bodies served with their content (the others come
redacted), or OK.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.trial.unittest import TestCase

from roost.federation.transport.client import HttpResponseError
from tests.federation.test_served import FED, fed, q
from tests.federation.two_servers import V3, FedNode, eventually, start_pair

VISIBILITIES = ("shared", "invited", "joined", "world_readable")
DENIED = "403 M_FORBIDDEN"
OK = "200"


@dataclass
class Setup:
    a: FedNode
    b: FedNode
    room_id: str
    before: str
    after: str | None


Probe = Callable[[Setup], Awaitable[Any]]


async def _call(setup: Setup, method: str, path: str, body: Any = None,
                args: Any = None) -> tuple[str | None, Any]:
    try:
        return None, await fed(setup.b, setup.a, method, path, body, args)
    except HttpResponseError as e:
        return f"{e.status} {e.errcode}", None


def _bodies(pdus: list[dict[str, Any]]) -> frozenset[str]:
    return frozenset(p["content"]["body"] for p in pdus
                     if p.get("type") == "m.room.message" and "body" in p.get("content", {}))


async def probe_backfill(s: Setup) -> Any:
    latest = s.after or s.before
    error, body = await _call(s, "GET", f"{FED}/v1/backfill/{q(s.room_id)}",
                              args={"v": [latest], "limit": ["50"]})
    return error or _bodies(body["pdus"])


async def probe_missing(s: Setup) -> Any:
    latest = s.after or s.before
    error, body = await _call(s, "POST", f"{FED}/v1/get_missing_events/{q(s.room_id)}",
                              {"earliest_events": [], "latest_events": [latest], "limit": 50})
    if error:
        return error
    latest_pdu = await _call(s, "GET", f"{FED}/v1/event/{q(latest)}")
    return _bodies(body["events"] + (latest_pdu[1]["pdus"] if latest_pdu[1] else []))


async def probe_event(s: Setup) -> Any:
    error, body = await _call(s, "GET", f"{FED}/v1/event/{q(s.before)}")
    return error or _bodies(body["pdus"])


async def probe_state_ids(s: Setup) -> Any:
    error, _ = await _call(s, "GET", f"{FED}/v1/state_ids/{q(s.room_id)}",
                           args={"event_id": [s.before]})
    return error or OK


async def probe_state(s: Setup) -> Any:
    error, _ = await _call(s, "GET", f"{FED}/v1/state/{q(s.room_id)}",
                           args={"event_id": [s.before]})
    return error or OK


async def probe_event_auth(s: Setup) -> Any:
    error, _ = await _call(s, "GET", f"{FED}/v1/event_auth/{q(s.room_id)}/{q(s.before)}")
    return error or OK


async def probe_timestamp(s: Setup) -> Any:
    """The event nearest at or before "before"'s time that the asking server may see."""
    event = await s.a.request("GET", V3 + f"/rooms/{q(s.room_id)}/event/{q(s.before)}",
                              user="alice")
    error, body = await _call(s, "GET", f"{FED}/v1/timestamp_to_event/{q(s.room_id)}",
                              args={"ts": [str(event["origin_server_ts"])], "dir": ["b"]})
    if error:
        return error
    if body["event_id"] == s.before:
        return "before"
    found = await s.a.request("GET", V3 + f"/rooms/{q(s.room_id)}/event/{q(body['event_id'])}",
                              user="alice")
    return str(found["type"])


PROBES: dict[str, Probe] = {
    "/backfill": probe_backfill,
    "/get_missing_events": probe_missing,
    "/event": probe_event,
    "/state_ids": probe_state_ids,
    "/state": probe_state,
    "/event_auth": probe_event_auth,
    "/timestamp_to_event": probe_timestamp,
}

ALL = frozenset({"before", "after"})
AFTER = frozenset({"after"})
BEFORE = frozenset({"before"})
NONE: frozenset[str] = frozenset()

# (endpoint, server, shared, invited, joined, world_readable)
SERVER_TABLE: list[tuple[str, str, Any, Any, Any, Any]] = [
    ("/backfill", "no member", DENIED, DENIED, DENIED, DENIED),
    ("/backfill", "joined late", ALL, AFTER, AFTER, ALL),
    ("/backfill", "left", DENIED, DENIED, DENIED, DENIED),
    ("/get_missing_events", "no member", DENIED, DENIED, DENIED, DENIED),
    ("/get_missing_events", "joined late", ALL, AFTER, AFTER, ALL),
    ("/get_missing_events", "left", DENIED, DENIED, DENIED, DENIED),
    ("/event", "no member", DENIED, DENIED, DENIED, DENIED),
    ("/event", "joined late", BEFORE, NONE, NONE, BEFORE),
    ("/event", "left", DENIED, DENIED, DENIED, DENIED),
    ("/state_ids", "no member", DENIED, DENIED, DENIED, DENIED),
    ("/state_ids", "joined late", OK, DENIED, DENIED, OK),
    ("/state_ids", "left", DENIED, DENIED, DENIED, DENIED),
    ("/state", "no member", DENIED, DENIED, DENIED, DENIED),
    ("/state", "joined late", OK, DENIED, DENIED, OK),
    ("/state", "left", DENIED, DENIED, DENIED, DENIED),
    ("/event_auth", "no member", DENIED, DENIED, DENIED, DENIED),
    ("/event_auth", "joined late", OK, DENIED, DENIED, OK),
    ("/event_auth", "left", DENIED, DENIED, DENIED, DENIED),
    # The nearest event at or before "before" the server may see: "before" itself when the
    # history is shared; else the last event sent while the visibility was still the
    # preset's "shared" (createRoom's m.room.guest_access, before initial_state changed it).
    ("/timestamp_to_event", "no member", DENIED, DENIED, DENIED, DENIED),
    ("/timestamp_to_event", "joined late", "before", "m.room.guest_access",
     "m.room.guest_access", "before"),
    ("/timestamp_to_event", "left", DENIED, DENIED, DENIED, DENIED),
]


async def send(node: FedNode, user: str, room_id: str, body: str, txn: str) -> str:
    answer = await node.request("PUT", V3 + f"/rooms/{q(room_id)}/send/m.room.message/{txn}",
                                {"msgtype": "m.text", "body": body}, user=user)
    return str(answer["event_id"])


async def visibility_room(a: FedNode, visibility: str) -> str:
    body = await a.request("POST", V3 + "/createRoom", {
        "preset": "public_chat", "room_version": "12", "initial_state": [
            {"type": "m.room.history_visibility",
             "content": {"history_visibility": visibility}}]}, user="alice")
    return str(body["room_id"])


async def join_from_b(a: FedNode, b: FedNode, room_id: str) -> None:
    await b.request("POST", V3 + f"/join/{q(room_id)}?server_name={q(a.name)}", {}, user="bob")

    async def a_sees_bob() -> bool:
        members = await a.request("GET", V3 + f"/rooms/{q(room_id)}/joined_members",
                                  user="alice")
        return b.user_id("bob") in members["joined"]

    await eventually(a_sees_bob)


async def leave_from_b(a: FedNode, b: FedNode, room_id: str) -> None:
    await b.request("POST", V3 + f"/rooms/{q(room_id)}/leave", {}, user="bob")

    async def a_sees_bob_gone() -> bool:
        members = await a.request("GET", V3 + f"/rooms/{q(room_id)}/joined_members",
                                  user="alice")
        return b.user_id("bob") not in members["joined"]

    await eventually(a_sees_bob_gone)


class ServerAccessTableTests(TestCase):
    timeout = 240

    async def _check_column(self, visibility: str) -> None:
        column = 2 + VISIBILITIES.index(visibility)
        a, b = await start_pair(self)
        await a.register("alice")
        await b.register("bob")
        setups = {}
        # The room B never joins.
        lonely = await visibility_room(a, visibility)
        setups["no member"] = Setup(a, b, lonely, await send(a, "alice", lonely, "before", "n1"),
                                    None)
        room_id = await visibility_room(a, visibility)
        before = await send(a, "alice", room_id, "before", "l1")
        await join_from_b(a, b, room_id)
        after = await send(a, "alice", room_id, "after", "l2")
        setups["joined late"] = Setup(a, b, room_id, before, after)
        gone = await visibility_room(a, visibility)
        gone_before = await send(a, "alice", gone, "before", "g1")
        await join_from_b(a, b, gone)
        gone_after = await send(a, "alice", gone, "after", "g2")
        await leave_from_b(a, b, gone)
        setups["left"] = Setup(a, b, gone, gone_before, gone_after)
        wrong = []
        for row in SERVER_TABLE:
            endpoint, server, expected = row[0], row[1], row[column]
            got = await PROBES[endpoint](setups[server])
            if got != expected:
                wrong.append(f"{endpoint} for a server {server} under {visibility}: "
                             f"expected {_show(expected)}, got {_show(got)}")
        self.assertEqual(wrong, [])

    def test_every_endpoint_has_a_row_for_every_server_state(self) -> None:
        rows = {(row[0], row[1]) for row in SERVER_TABLE}
        missing = [(e, v) for e in PROBES for v in ("no member", "joined late", "left")
                   if (e, v) not in rows]
        self.assertEqual(missing, [])

    async def test_shared(self) -> None:
        await self._check_column("shared")

    async def test_invited(self) -> None:
        await self._check_column("invited")

    async def test_joined(self) -> None:
        await self._check_column("joined")

    async def test_world_readable(self) -> None:
        await self._check_column("world_readable")


def _show(answer: Any) -> str:
    return str(sorted(answer)) if isinstance(answer, frozenset) else str(answer)


class ServerAclTests(TestCase):
    """m.room.server_acl, checked by A's federation listener for B (both are 127.0.0.1,
    so the ACL names the host; the port is not part of what an ACL matches)."""

    timeout = 240

    async def _room_with_b(self) -> tuple[FedNode, FedNode, str, str]:
        a, b = await start_pair(self)
        await a.register("alice")
        await b.register("bob")
        room_id = await visibility_room(a, "shared")
        await join_from_b(a, b, room_id)
        first = await send(a, "alice", room_id, "first", "a1")
        return a, b, room_id, first

    async def _set_acl(self, a: FedNode, room_id: str, content: dict[str, Any]) -> None:
        await a.request("PUT", V3 + f"/rooms/{q(room_id)}/state/m.room.server_acl/", content,
                        user="alice")

    async def _refused(self, coro: Awaitable[Any]) -> str:
        try:
            await coro
        except HttpResponseError as e:
            return f"{e.status} {e.errcode}"
        return "200"

    async def test_a_denied_server_is_refused_on_every_room_request_pdu_and_edu(self) -> None:
        a, b, room_id, first = await self._room_with_b()
        bob, carol = b.user_id("bob"), b.user_id("carol")
        alias = f"#acl:{a.name}"
        await a.request("PUT", V3 + f"/directory/room/{q(alias)}", {"room_id": room_id},
                        user="alice")
        # Allowed before the ACL: the same requests answer.
        self.assertEqual(await self._refused(fed(b, a, "GET", f"{FED}/v1/state_ids/{q(room_id)}",
                                                 args={"event_id": [first]})), "200")
        await self._set_acl(a, room_id, {"allow": ["*"], "deny": ["127.0.0.1"]})
        r = q(room_id)
        refused = {
            "make_join": fed(b, a, "GET", f"{FED}/v1/make_join/{r}/{q(carol)}",
                             args={"ver": ["12"]}),
            "send_join": fed(b, a, "PUT", f"{FED}/v2/send_join/{r}/{q('$x')}", {}),
            "make_leave": fed(b, a, "GET", f"{FED}/v1/make_leave/{r}/{q(bob)}"),
            "send_leave": fed(b, a, "PUT", f"{FED}/v2/send_leave/{r}/{q('$x')}", {}),
            "invite": fed(b, a, "PUT", f"{FED}/v2/invite/{r}/{q('$x')}", {}),
            "backfill": fed(b, a, "GET", f"{FED}/v1/backfill/{r}", args={"v": [first]}),
            "get_missing_events": fed(b, a, "POST", f"{FED}/v1/get_missing_events/{r}",
                                      {"earliest_events": [], "latest_events": [first]}),
            "state_ids": fed(b, a, "GET", f"{FED}/v1/state_ids/{r}", args={"event_id": [first]}),
            "state": fed(b, a, "GET", f"{FED}/v1/state/{r}", args={"event_id": [first]}),
            "event_auth": fed(b, a, "GET", f"{FED}/v1/event_auth/{r}/{q(first)}"),
            "event": fed(b, a, "GET", f"{FED}/v1/event/{q(first)}"),
            "query/directory": fed(b, a, "GET", f"{FED}/v1/query/directory",
                                   args={"room_alias": [alias]}),
        }
        answers = {name: await self._refused(call) for name, call in refused.items()}
        self.assertEqual(answers, dict.fromkeys(refused, "403 M_FORBIDDEN"))

        # A PDU from B (bob's message, built and signed by B) is refused in /send, not stored.
        template = await b.request("PUT", V3 + f"/rooms/{r}/send/m.room.message/b1",
                                   {"msgtype": "m.text", "body": "from a denied server"},
                                   user="bob")
        denied_id = template["event_id"]
        pdu = (await b.server.hs.engine.get_events([denied_id]))[denied_id].event.pdu  # type: ignore[union-attr]
        answer = await fed(b, a, "PUT", f"{FED}/v1/send/acl1",
                           {"origin": b.name, "origin_server_ts": 1, "pdus": [pdu], "edus": [
                               {"edu_type": "m.typing", "content": {
                                   "room_id": room_id, "user_id": bob, "typing": True}}]})
        self.assertIn("error", answer["pdus"][denied_id])
        stored = await a.server.hs.engine.get_events([denied_id])  # type: ignore[union-attr]
        self.assertEqual(stored, {})
        typing = await a.request("GET", V3 + "/sync?timeout=0", user="alice")
        ephemeral = typing["rooms"]["join"][room_id].get("ephemeral", {}).get("events", [])
        self.assertEqual([e for e in ephemeral if e["type"] == "m.typing"
                          and e["content"]["user_ids"]], [])

    async def test_an_acl_that_allows_the_server_lets_it_take_part(self) -> None:
        a, b, room_id, first = await self._room_with_b()
        await self._set_acl(a, room_id, {"allow": ["127.0.0.1", "example.org"],
                                         "deny": ["evil.*"]})
        ids = await fed(b, a, "GET", f"{FED}/v1/state_ids/{q(room_id)}",
                        args={"event_id": [first]})
        self.assertIn(first, [*ids["pdu_ids"], first])
        answer = await fed(b, a, "GET", f"{FED}/v1/make_join/{q(room_id)}/"
                                        f"{q(b.user_id('carol'))}", args={"ver": ["12"]})
        self.assertEqual(answer["event"]["content"], {"membership": "join"})
        await b.request("PUT", V3 + f"/rooms/{q(room_id)}/send/m.room.message/ok1",
                        {"msgtype": "m.text", "body": "allowed"}, user="bob")

        async def alice_sees() -> bool:
            chunk = (await a.request("GET", V3 + f"/rooms/{q(room_id)}/messages?dir=b",
                                     user="alice"))["chunk"]
            return any(e["content"].get("body") == "allowed" for e in chunk)

        await eventually(alice_sees)

    async def test_nothing_of_the_room_is_sent_to_a_server_its_acl_denies(self) -> None:
        a, b, room_id, _first = await self._room_with_b()
        await b.stop()  # what A owes B stays queued, where the test can see it
        assert a.server is not None
        hs = a.server.hs

        async def queued_for_b(event_id: str) -> bool:
            rows = await hs.db.run("queued", lambda t: t.query(
                "SELECT 1 FROM federation_outbound_pdus WHERE destination = %s"
                " AND event_id = %s", (b.name, event_id)))
            return bool(rows)

        async def sender_read(event_id: str) -> bool:
            position = (await hs.engine.get_events([event_id]))[event_id].stream_ordering
            row = await hs.db.run("position", lambda t: t.query_one(
                "SELECT stream_position FROM federation_sender_position"))
            return row is not None and position is not None and row[0] >= position

        before = await send(a, "alice", room_id, "before the ACL", "q1")
        await eventually(lambda: queued_for_b(before))
        await self._set_acl(a, room_id, {"allow": ["*"], "deny": ["127.0.0.1"]})
        acl = (await a.request("GET", V3 + f"/rooms/{q(room_id)}/state/m.room.server_acl/"
                               "?format=event", user="alice"))["event_id"]
        await eventually(lambda: queued_for_b(acl))  # the ACL itself goes out, to be upheld
        hidden = await send(a, "alice", room_id, "after the ACL", "q2")
        await eventually(lambda: sender_read(hidden))
        self.assertFalse(await queued_for_b(hidden))


class BoundedReadTests(TestCase):
    timeout = 120

    async def test_a_read_may_start_from_a_bounded_number_of_events(self) -> None:
        a, b = await start_pair(self)
        await a.register("alice")
        await b.register("bob")
        room_id = await visibility_room(a, "shared")
        await join_from_b(a, b, room_id)
        first = await send(a, "alice", room_id, "one", "m1")
        setup = Setup(a, b, room_id, first, None)
        many = [f"$fake{i}" for i in range(21)]
        error, _ = await _call(setup, "POST", f"{FED}/v1/get_missing_events/{q(room_id)}",
                               {"earliest_events": [], "latest_events": [first, *many * 3]})
        self.assertEqual(error, "400 M_BAD_JSON")
        error, _ = await _call(setup, "POST", f"{FED}/v1/get_missing_events/{q(room_id)}",
                               {"earliest_events": many * 10, "latest_events": [first]})
        self.assertEqual(error, "400 M_BAD_JSON")
        # /backfill reads from at most 20 starting points; the rest are ignored.
        error, body = await _call(setup, "GET", f"{FED}/v1/backfill/{q(room_id)}",
                                  args={"v": [first, *many * 50], "limit": ["5"]})
        self.assertIsNone(error)
        self.assertIn("one", _bodies(body["pdus"]))
