"""The access table: every client read endpoint x viewer x history visibility -> answer.

One room per history visibility, on a real homeserver, lived through the same
timeline: alice (the creator) sends "before"; the viewers arrive (`invited` is
invited, `joined`, `left`, `banned` and `forgotten` join); alice sends "during"
and starts a thread on "before"; `left` leaves, `banned` is banned, `forgotten`
leaves and forgets; alice sends "after", reacts "r" to "before", changes the
topic from "early" to "late", renames herself "late alice" and invites zed.
`never` has never been in the room.

Each row of TABLE is (endpoint, viewer, answers under shared, invited, joined,
world_readable). An answer is an error (DENIED: 403 M_FORBIDDEN, MISSING: 404
M_NOT_FOUND, which the spec gives /event and /relations for "not allowed"
too) or what the endpoint's probe reads off a 200 (the message bodies
it served, "current" or "departure" for which state it served, OK).

To add an endpoint: write a probe `async def probe(viewer, room) -> answer`, add
it to PROBES, and add one row per viewer to TABLE.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.trial.unittest import TestCase

from tests.client_api.test_rooms_http import Client, Response, start_users
from tests.server_harness import q

VISIBILITIES = ("shared", "invited", "joined", "world_readable")
VIEWERS = ("never", "invited", "joined", "left", "banned", "forgotten")

DENIED = "403 M_FORBIDDEN"
MISSING = "404 M_NOT_FOUND"
OK = "200"
CURRENT = "current"
DEPARTURE = "departure"
ALL = frozenset({"before", "during", "after"})


def bodies(*names: str) -> frozenset[str]:
    return frozenset(names)


NONE = bodies()


@dataclass
class Room:
    room_id: str
    before: str  # event ids of alice's messages
    during: str
    after: str


Probe = Callable[[Client, Room], Awaitable[Any]]


def _error(resp: Response) -> str | None:
    if resp.status == 200:
        return None
    body = resp.body if isinstance(resp.body, dict) else {}
    return f"{resp.status} {body.get('errcode')}"


def _bodies(events: list[dict[str, Any]]) -> frozenset[str]:
    return frozenset(e["content"]["body"] for e in events
                     if e.get("type") == "m.room.message" and "body" in e.get("content", {})
                     and "m.relates_to" not in e["content"])


async def _get(viewer: Client, path: str) -> tuple[str | None, Any]:
    resp = await viewer.call("GET", path)
    return _error(resp), resp.body


async def probe_messages(viewer: Client, room: Room) -> Any:
    error, body = await _get(viewer, f"/rooms/{q(room.room_id)}/messages?dir=b&limit=100")
    return error or _bodies(body["chunk"])


async def probe_event(viewer: Client, room: Room) -> Any:
    error, _ = await _get(viewer, f"/rooms/{q(room.room_id)}/event/{q(room.before)}")
    return error or OK


async def probe_context(viewer: Client, room: Room) -> Any:
    error, body = await _get(viewer, f"/rooms/{q(room.room_id)}/context/{q(room.during)}?limit=20")
    if error:
        return error
    return _bodies([*body["events_before"], body["event"], *body["events_after"]])


async def _topic_state(events: list[dict[str, Any]]) -> str:
    topics = [e["content"].get("topic") for e in events if e["type"] == "m.room.topic"]
    return CURRENT if topics == ["late"] else DEPARTURE if topics == ["early"] else str(topics)


async def probe_state(viewer: Client, room: Room) -> Any:
    error, body = await _get(viewer, f"/rooms/{q(room.room_id)}/state")
    return error or await _topic_state(body)


async def probe_state_topic(viewer: Client, room: Room) -> Any:
    error, body = await _get(viewer, f"/rooms/{q(room.room_id)}/state/m.room.topic/")
    return error or (CURRENT if body.get("topic") == "late" else DEPARTURE)


async def probe_members(viewer: Client, room: Room) -> Any:
    error, body = await _get(viewer, f"/rooms/{q(room.room_id)}/members")
    if error:
        return error
    zed = [e for e in body["chunk"] if e["state_key"].startswith("@zed:")]
    return CURRENT if zed else DEPARTURE


async def probe_members_at(viewer: Client, room: Room) -> Any:
    """/members?at=<now>: alice renamed herself after the departures."""
    now = (await viewer.ok("GET", "/sync?timeout=0"))["next_batch"]
    error, body = await _get(viewer, f"/rooms/{q(room.room_id)}/members?at={q(now)}")
    if error:
        return error
    alice = [e for e in body["chunk"] if e["state_key"].startswith("@alice:")]
    names = [e["content"].get("displayname") for e in alice]
    return CURRENT if names == ["late alice"] else DEPARTURE if names == ["alice"] else str(names)


async def probe_sync(viewer: Client, room: Room) -> Any:
    """An initial /sync (left rooms included): the bodies of the room's timeline, "invite"
    for an invite, "absent" when the room is not there at all."""
    flt = json.dumps({"room": {"include_leave": True, "timeline": {"limit": 50}}})
    rooms = (await viewer.ok("GET", f"/sync?timeout=0&filter={q(flt)}"))["rooms"]
    return _rooms_answer(rooms, room)


def _rooms_answer(rooms: dict[str, Any], room: Room) -> Any:
    if room.room_id in rooms.get("invite", {}):
        return "invite"
    for section in ("join", "leave"):
        if room.room_id in rooms.get(section, {}):
            return _bodies(rooms[section][room.room_id]["timeline"]["events"])
    return "absent"


async def probe_socket(viewer: Client, room: Room) -> Any:
    """The WebSocket's first sync push with the same filter as probe_sync: the socket
    serves what /sync serves, through the same access rules."""
    from autobahn.twisted.websocket import connectWS
    from twisted.internet import reactor

    from tests.client_api.test_websocket import _factory

    factory = _factory(viewer.server, None)
    connector = connectWS(factory)
    try:
        protocol = await factory.opened.addTimeout(15, reactor)
        protocol.sendMessage(json.dumps({"op": "auth", "token": viewer.token}).encode())
        ready = await factory.frames.get().addTimeout(15, reactor)
        assert ready["type"] == "ready", ready
        flt = {"room": {"include_leave": True, "timeline": {"limit": 50}}}
        protocol.sendMessage(json.dumps({"op": "sync", "since": None, "filter": flt}).encode())
        while True:
            frame = await factory.frames.get().addTimeout(15, reactor)
            if frame.get("type") == "sync":
                return _rooms_answer(frame["body"].get("rooms", {}), room)
    finally:
        if not factory.closed.called:
            protocol.sendClose(1000)
            await factory.closed.addTimeout(15, reactor)
        connector.disconnect()


async def probe_joined_members(viewer: Client, room: Room) -> Any:
    error, body = await _get(viewer, f"/rooms/{q(room.room_id)}/joined_members")
    return error or OK


async def probe_relations(viewer: Client, room: Room) -> Any:
    error, body = await _get(viewer, f"/rooms/{q(room.room_id)}/relations/{q(room.before)}"
                                     "/m.annotation")
    return error or frozenset(e["content"]["m.relates_to"]["key"] for e in body["chunk"])


async def probe_threads(viewer: Client, room: Room) -> Any:
    error, body = await _get(viewer, f"/_matrix/client/v1/rooms/{q(room.room_id)}/threads")
    return error or _bodies(body["chunk"])


async def probe_aliases(viewer: Client, room: Room) -> Any:
    error, _ = await _get(viewer, f"/rooms/{q(room.room_id)}/aliases")
    return error or OK


async def probe_notifications(viewer: Client, room: Room) -> Any:
    push = viewer.server.hs.push
    assert push is not None
    await push.evaluator.reached(viewer.server.hs.streams["events"].current, 30)
    error, body = await _get(viewer, "/notifications?limit=100")
    return error or _bodies([n["event"] for n in body["notifications"]
                             if n["room_id"] == room.room_id])


async def probe_search(viewer: Client, room: Room) -> Any:
    """POST /search in this room only; a room the viewer was never in is not searched."""
    resp = await viewer.call("POST", "/search", {"search_categories": {"room_events": {
        "search_term": "before or during or after", "filter": {"rooms": [room.room_id]}}}})
    error = _error(resp)
    if error:
        return error
    return _bodies([r["result"] for r in resp.body["search_categories"]["room_events"]["results"]])


async def probe_timestamp(viewer: Client, room: Room) -> Any:
    """The nearest event at or before now; which one is the timestamp tests' business."""
    error, _ = await _get(viewer, f"/_matrix/client/v1/rooms/{q(room.room_id)}"
                                  "/timestamp_to_event?ts=99999999999999&dir=b")
    return error or OK


async def probe_room_initial_sync(viewer: Client, room: Room) -> Any:
    error, body = await _get(viewer, f"/rooms/{q(room.room_id)}/initialSync?limit=100")
    return error or _bodies(body.get("messages", {}).get("chunk", []))


async def probe_events_by_id(viewer: Client, room: Room) -> Any:
    error, _ = await _get(viewer, f"/events/{q(room.before)}")
    return error or OK


async def probe_peek(viewer: Client, room: Room) -> Any:
    error, body = await _get(viewer, f"/events?room_id={q(room.room_id)}&from=s0&timeout=0")
    return error or _bodies(body["chunk"])


async def probe_hierarchy(viewer: Client, room: Room) -> Any:
    """The room's space hierarchy: a public room is shown to anyone who may join it."""
    error, body = await _get(viewer, f"/_matrix/client/v1/rooms/{q(room.room_id)}/hierarchy")
    return error or ([r["room_id"] for r in body["rooms"]] == [room.room_id] and OK)


async def probe_room_summary(viewer: Client, room: Room) -> Any:
    error, body = await _get(viewer, f"/_matrix/client/v1/room_summary/{q(room.room_id)}")
    return error or (body["room_id"] == room.room_id and OK)


PROBES: dict[str, Probe] = {
    "/messages": probe_messages,
    "/event": probe_event,
    "/context": probe_context,
    "/state": probe_state,
    "/state/{type}/{key}": probe_state_topic,
    "/members": probe_members,
    "/members?at": probe_members_at,
    "/sync": probe_sync,
    "/_roost/ws": probe_socket,
    "/joined_members": probe_joined_members,
    "/relations": probe_relations,
    "/threads": probe_threads,
    "/aliases": probe_aliases,
    "/notifications": probe_notifications,
    "/search": probe_search,
    "/timestamp_to_event": probe_timestamp,
    "/rooms/{roomId}/initialSync": probe_room_initial_sync,
    "/events/{eventId}": probe_events_by_id,
    "/events?room_id": probe_peek,
    "/hierarchy": probe_hierarchy,
    "/room_summary": probe_room_summary,
}

B, BD, D, DA = bodies("before"), bodies("before", "during"), bodies("during"), \
    bodies("during", "after")
R = frozenset({"r"})

# (endpoint, viewer, shared, invited, joined, world_readable)
TABLE: list[tuple[str, str, Any, Any, Any, Any]] = [
    ("/messages", "never", DENIED, DENIED, DENIED, ALL),
    ("/messages", "invited", DENIED, DENIED, DENIED, ALL),
    ("/messages", "joined", ALL, DA, DA, ALL),
    ("/messages", "left", BD, D, D, ALL),
    ("/messages", "banned", BD, D, D, ALL),
    ("/messages", "forgotten", DENIED, DENIED, DENIED, ALL),

    ("/event", "never", MISSING, MISSING, MISSING, OK),
    ("/event", "invited", MISSING, MISSING, MISSING, OK),
    ("/event", "joined", OK, MISSING, MISSING, OK),
    ("/event", "left", OK, MISSING, MISSING, OK),
    ("/event", "banned", OK, MISSING, MISSING, OK),
    ("/event", "forgotten", MISSING, MISSING, MISSING, OK),

    ("/context", "never", DENIED, DENIED, DENIED, ALL),
    ("/context", "invited", DENIED, DENIED, DENIED, ALL),
    ("/context", "joined", ALL, DA, DA, ALL),
    ("/context", "left", BD, D, D, ALL),
    ("/context", "banned", BD, D, D, ALL),
    ("/context", "forgotten", DENIED, DENIED, DENIED, ALL),

    ("/state", "never", DENIED, DENIED, DENIED, CURRENT),
    ("/state", "invited", DENIED, DENIED, DENIED, CURRENT),
    ("/state", "joined", CURRENT, CURRENT, CURRENT, CURRENT),
    ("/state", "left", DEPARTURE, DEPARTURE, DEPARTURE, CURRENT),
    ("/state", "banned", DEPARTURE, DEPARTURE, DEPARTURE, CURRENT),
    ("/state", "forgotten", DENIED, DENIED, DENIED, CURRENT),

    ("/state/{type}/{key}", "never", DENIED, DENIED, DENIED, CURRENT),
    ("/state/{type}/{key}", "invited", DENIED, DENIED, DENIED, CURRENT),
    ("/state/{type}/{key}", "joined", CURRENT, CURRENT, CURRENT, CURRENT),
    ("/state/{type}/{key}", "left", DEPARTURE, DEPARTURE, DEPARTURE, CURRENT),
    ("/state/{type}/{key}", "banned", DEPARTURE, DEPARTURE, DEPARTURE, CURRENT),
    ("/state/{type}/{key}", "forgotten", DENIED, DENIED, DENIED, CURRENT),

    ("/members", "never", DENIED, DENIED, DENIED, CURRENT),
    ("/members", "invited", DENIED, DENIED, DENIED, CURRENT),
    ("/members", "joined", CURRENT, CURRENT, CURRENT, CURRENT),
    ("/members", "left", DEPARTURE, DEPARTURE, DEPARTURE, CURRENT),
    ("/members", "banned", DEPARTURE, DEPARTURE, DEPARTURE, CURRENT),
    ("/members", "forgotten", DENIED, DENIED, DENIED, CURRENT),

    ("/members?at", "never", DENIED, DENIED, DENIED, CURRENT),
    ("/members?at", "invited", DENIED, DENIED, DENIED, CURRENT),
    ("/members?at", "joined", CURRENT, CURRENT, CURRENT, CURRENT),
    ("/members?at", "left", DEPARTURE, DEPARTURE, DEPARTURE, CURRENT),
    ("/members?at", "banned", DEPARTURE, DEPARTURE, DEPARTURE, CURRENT),
    ("/members?at", "forgotten", DENIED, DENIED, DENIED, CURRENT),

    ("/sync", "never", "absent", "absent", "absent", "absent"),
    ("/sync", "invited", "invite", "invite", "invite", "invite"),
    ("/sync", "joined", ALL, DA, DA, ALL),
    ("/sync", "left", BD, D, D, BD),
    ("/sync", "banned", BD, D, D, BD),
    ("/sync", "forgotten", "absent", "absent", "absent", "absent"),

    # The WebSocket's first push serves exactly what an initial /sync does.
    ("/_roost/ws", "never", "absent", "absent", "absent", "absent"),
    ("/_roost/ws", "invited", "invite", "invite", "invite", "invite"),
    ("/_roost/ws", "joined", ALL, DA, DA, ALL),
    ("/_roost/ws", "left", BD, D, D, BD),
    ("/_roost/ws", "banned", BD, D, D, BD),
    ("/_roost/ws", "forgotten", "absent", "absent", "absent", "absent"),

    ("/joined_members", "never", DENIED, DENIED, DENIED, OK),
    ("/joined_members", "invited", DENIED, DENIED, DENIED, OK),
    ("/joined_members", "joined", OK, OK, OK, OK),
    ("/joined_members", "left", DENIED, DENIED, DENIED, OK),
    ("/joined_members", "banned", DENIED, DENIED, DENIED, OK),
    ("/joined_members", "forgotten", DENIED, DENIED, DENIED, OK),

    ("/relations", "never", MISSING, MISSING, MISSING, R),
    ("/relations", "invited", MISSING, MISSING, MISSING, R),
    ("/relations", "joined", R, MISSING, MISSING, R),
    ("/relations", "left", NONE, MISSING, MISSING, R),
    ("/relations", "banned", NONE, MISSING, MISSING, R),
    ("/relations", "forgotten", MISSING, MISSING, MISSING, R),

    ("/threads", "never", DENIED, DENIED, DENIED, B),
    ("/threads", "invited", DENIED, DENIED, DENIED, B),
    ("/threads", "joined", B, NONE, NONE, B),
    ("/threads", "left", B, NONE, NONE, B),
    ("/threads", "banned", B, NONE, NONE, B),
    ("/threads", "forgotten", DENIED, DENIED, DENIED, B),

    ("/aliases", "never", DENIED, DENIED, DENIED, OK),
    ("/aliases", "invited", DENIED, DENIED, DENIED, OK),
    ("/aliases", "joined", OK, OK, OK, OK),
    ("/aliases", "left", DENIED, DENIED, DENIED, OK),
    ("/aliases", "banned", DENIED, DENIED, DENIED, OK),
    ("/aliases", "forgotten", DENIED, DENIED, DENIED, OK),

    # Notifications exist only for events that arrived while the viewer was a member (an
    # invitee is notified of the invite alone), each shown if the viewer may see it now (a
    # forgotten room's events only when world-readable).
    ("/notifications", "never", NONE, NONE, NONE, NONE),
    ("/notifications", "invited", NONE, NONE, NONE, NONE),
    ("/notifications", "joined", DA, DA, DA, DA),
    ("/notifications", "left", D, D, D, D),
    ("/notifications", "banned", D, D, D, D),
    ("/notifications", "forgotten", NONE, NONE, NONE, D),

    # Search looks in the rooms the viewer is or was in, never in one only invited to or
    # never joined; what it finds there is what /messages would show.
    ("/search", "never", NONE, NONE, NONE, NONE),
    ("/search", "invited", NONE, NONE, NONE, NONE),
    ("/search", "joined", ALL, DA, DA, ALL),
    ("/search", "left", BD, D, D, ALL),
    ("/search", "banned", BD, D, D, ALL),
    ("/search", "forgotten", NONE, NONE, NONE, ALL),

    ("/timestamp_to_event", "never", DENIED, DENIED, DENIED, OK),
    ("/timestamp_to_event", "invited", DENIED, DENIED, DENIED, OK),
    ("/timestamp_to_event", "joined", OK, OK, OK, OK),
    ("/timestamp_to_event", "left", OK, OK, OK, OK),
    ("/timestamp_to_event", "banned", OK, OK, OK, OK),
    ("/timestamp_to_event", "forgotten", DENIED, DENIED, DENIED, OK),

    # The deprecated endpoints answer as their modern counterparts: the room's initialSync
    # and peeking (/events with room_id) as /messages, /events/{eventId} as /event.
    ("/rooms/{roomId}/initialSync", "never", DENIED, DENIED, DENIED, ALL),
    ("/rooms/{roomId}/initialSync", "invited", DENIED, DENIED, DENIED, ALL),
    ("/rooms/{roomId}/initialSync", "joined", ALL, DA, DA, ALL),
    ("/rooms/{roomId}/initialSync", "left", BD, D, D, ALL),
    ("/rooms/{roomId}/initialSync", "banned", BD, D, D, ALL),
    ("/rooms/{roomId}/initialSync", "forgotten", DENIED, DENIED, DENIED, ALL),

    ("/events?room_id", "never", DENIED, DENIED, DENIED, ALL),
    ("/events?room_id", "invited", DENIED, DENIED, DENIED, ALL),
    ("/events?room_id", "joined", ALL, DA, DA, ALL),
    ("/events?room_id", "left", BD, D, D, ALL),
    ("/events?room_id", "banned", BD, D, D, ALL),
    ("/events?room_id", "forgotten", DENIED, DENIED, DENIED, ALL),

    ("/events/{eventId}", "never", MISSING, MISSING, MISSING, OK),
    ("/events/{eventId}", "invited", MISSING, MISSING, MISSING, OK),
    ("/events/{eventId}", "joined", OK, MISSING, MISSING, OK),
    ("/events/{eventId}", "left", OK, MISSING, MISSING, OK),
    ("/events/{eventId}", "banned", OK, MISSING, MISSING, OK),
    ("/events/{eventId}", "forgotten", MISSING, MISSING, MISSING, OK),

    # The rooms are public: anyone who may join them sees them in a hierarchy (rooms.hierarchy).
    ("/hierarchy", "never", OK, OK, OK, OK),
    ("/hierarchy", "invited", OK, OK, OK, OK),
    ("/hierarchy", "joined", OK, OK, OK, OK),
    ("/hierarchy", "left", OK, OK, OK, OK),
    ("/hierarchy", "banned", OK, OK, OK, OK),
    ("/hierarchy", "forgotten", OK, OK, OK, OK),

    # A public room's summary, like its hierarchy, is shown to anyone who may join it.
    ("/room_summary", "never", OK, OK, OK, OK),
    ("/room_summary", "invited", OK, OK, OK, OK),
    ("/room_summary", "joined", OK, OK, OK, OK),
    ("/room_summary", "left", OK, OK, OK, OK),
    ("/room_summary", "banned", OK, OK, OK, OK),
    ("/room_summary", "forgotten", OK, OK, OK, OK),
]


async def live_through_timeline(visibility: str, alice: Client, viewers: dict[str, Client],
                                zed: Client) -> Room:
    """The room's life, as the module docstring tells it."""
    room_id = await alice.create_room(preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": visibility}},
        {"type": "m.room.topic", "content": {"topic": "early"}}])
    r = f"/rooms/{q(room_id)}"
    before = await alice.send(room_id, "before")
    await alice.invite(room_id, viewers["invited"].user_id)
    for name in ("joined", "left", "banned", "forgotten"):
        await viewers[name].join(room_id)
    during = await alice.send(room_id, "during")
    await alice.send(room_id, content={"msgtype": "m.text", "body": "reply", "m.relates_to": {
        "rel_type": "m.thread", "event_id": before}})
    await viewers["left"].leave(room_id)
    await alice.ok("POST", f"{r}/ban", {"user_id": viewers["banned"].user_id})
    await viewers["forgotten"].leave(room_id)
    await viewers["forgotten"].ok("POST", f"{r}/forget", {})
    after = await alice.send(room_id, "after")
    await alice.send(room_id, event_type="m.reaction", content={"m.relates_to": {
        "rel_type": "m.annotation", "event_id": before, "key": "r"}})
    await alice.put_state(room_id, "m.room.topic", {"topic": "late"})
    await alice.put_state(room_id, "m.room.member", {"membership": "join",
                                                      "displayname": "late alice"},
                          alice.user_id)
    await alice.invite(room_id, zed.user_id)
    return Room(room_id, before, during, after)


class AccessTableTests(TestCase):
    """One test per history visibility: every row's answer in that column."""

    async def _check_column(self, visibility: str) -> None:
        column = 2 + VISIBILITIES.index(visibility)
        alice, zed, *others = await start_users(self, "alice", "zed", *VIEWERS)
        viewers = dict(zip(VIEWERS, others, strict=True))
        room = await live_through_timeline(visibility, alice, viewers, zed)
        wrong = []
        for row in TABLE:
            endpoint, viewer, expected = row[0], row[1], row[column]
            got = await PROBES[endpoint](viewers[viewer], room)
            if got != expected:
                wrong.append(f"{endpoint} as {viewer} under {visibility}: "
                             f"expected {_show(expected)}, got {_show(got)}")
        self.assertEqual(wrong, [])

    async def test_shared(self) -> None:
        await self._check_column("shared")

    async def test_invited(self) -> None:
        await self._check_column("invited")

    async def test_joined(self) -> None:
        await self._check_column("joined")

    async def test_world_readable(self) -> None:
        await self._check_column("world_readable")

    def test_every_endpoint_has_a_row_for_every_viewer(self) -> None:
        rows = {(row[0], row[1]) for row in TABLE}
        missing = [(e, v) for e in PROBES for v in VIEWERS if (e, v) not in rows]
        self.assertEqual(missing, [])


def _show(answer: Any) -> str:
    return str(sorted(answer)) if isinstance(answer, frozenset) else str(answer)
