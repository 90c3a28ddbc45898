"""Room writes from any process, persisted by the room's one writer.

A room's events must be appended by one process only: the engine builds each
event on the room's cached head (its extremities, state and depth) and a second
process appending at once would fork the room or lose an extremity. So with
several processes (`workers.event_writers`), each room has one writer
(roles.py), and every other process hands the writes it is asked for (client
sends, state, membership, redactions, room creation, remote events from
federation, backfill) to that writer over its internal listener: an HTTP POST
of the call's arguments as JSON, authenticated with `workers.shared_secret`.

`ShardedEngine` is a `RoomEngine` whose write methods do that for rooms it
does not write, so no caller above knows there is more than one process. Reads
stay local: a process that does not write a room drops its cached head when the
events stream says the room changed (wired in wiring_roles.py).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from roost.homeserver.roles import Roles
from roost.rooms.engine import NewEvent, RemoteOutcome, RoomEngine, RoomError, StateKey
from roost.rooms.events import Event
from roost.rooms.remote_ingest import KNOWN
from roost.rooms.versions import RoomVersion, get_room_version

logger = logging.getLogger(__name__)

PREFIX = "/_roost/internal/v1/engine/"
# A forwarded write waits at most this long for its writer: a dead writer gives a
# clear error, never a request that hangs.
FORWARD_TIMEOUT_S = 30.0
# After a forwarded write, how long this process waits at most for its own view of the
# events stream to reach the writer's (over the replication bus).
CATCH_UP_S = 5.0

JsonDict = dict[str, Any]


# -- the arguments and answers as JSON ------------------------------------------

def event_json(event: Event) -> JsonDict:
    return {"v": event.version.identifier, "id": event.event_id, "pdu": event.pdu,
            "unsigned": event.unsigned}


def event_from(data: Mapping[str, Any]) -> Event:
    pdu = {**data["pdu"], "unsigned": data["unsigned"]} if data.get("unsigned") else data["pdu"]
    return Event.from_built(pdu, get_room_version(data["v"]), data["id"])


def events_from(items: list[Any]) -> list[Event]:
    return [event_from(item) for item in items]


def new_event_json(event: NewEvent) -> JsonDict:
    return {"sender": event.sender, "type": event.type, "content": event.content,
            "state_key": event.state_key, "redacts": event.redacts,
            "txn_key": list(event.txn_key) if event.txn_key else None}


def new_event_from(data: Mapping[str, Any]) -> NewEvent:
    txn = data.get("txn_key")
    return NewEvent(data["sender"], data["type"], data["content"], data.get("state_key"),
                    data.get("redacts"), (txn[0], txn[1], txn[2]) if txn else None)


def state_json(state: Mapping[StateKey, str] | None) -> list[list[str]] | None:
    return None if state is None else [[t, k, e] for (t, k), e in state.items()]


def state_from(items: list[list[str]] | None) -> dict[StateKey, str] | None:
    return None if items is None else {(t, k): e for t, k, e in items}


def outcome_json(outcome: RemoteOutcome) -> JsonDict:
    return {"event_id": outcome.event_id, "status": outcome.status, "reason": outcome.reason,
            "state_before": state_json(outcome.state_before)}


def outcome_from(data: Mapping[str, Any]) -> RemoteOutcome:
    return RemoteOutcome(data["event_id"], data["status"], data.get("reason"),
                         state_from(data.get("state_before")))


def states_json(states: Mapping[str, Mapping[StateKey, str]] | None) -> JsonDict:
    return {eid: state_json(s) for eid, s in (states or {}).items()}


def states_from(data: Mapping[str, Any]) -> dict[str, dict[StateKey, str]]:
    return {eid: state_from(s) or {} for eid, s in data.items()}


# -- the forwarding side -----------------------------------------------------------

class WriterClient:
    """POSTs a write to a writer's internal listener and returns its answer."""

    def __init__(self, reactor: Any, roles: Roles) -> None:
        self._reactor = reactor
        self._roles = roles
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 32
        import treq  # here, not at start: treq (1.7 MiB) only for servers that use it

        self._http = treq.client.HTTPClient(Agent(reactor, pool=self.pool))
        self._stream: Any = None
        self._waiting: list[tuple[int, defer.Deferred[None]]] = []

    async def call(self, writer: str, method: str, args: JsonDict) -> tuple[Any, int]:
        """(the writer's answer, its events stream position after the write)."""
        url = self._roles.writer_urls[writer] + PREFIX + method
        headers = {"Authorization": f"Bearer {self._roles.shared_secret}",
                   "Content-Type": "application/json"}
        try:
            response = await self._http.post(
                url, data=json.dumps(args).encode(), headers=headers,
                timeout=FORWARD_TIMEOUT_S)
            body = json.loads(await response.content())
        except Exception as e:  # connection refused, timeout, garbage: the writer is down
            logger.warning("room writer %s unreachable for %s: %s", writer, method, e)
            raise RoomError(503, "M_UNKNOWN",
                            f"this room's writer ({writer}) is not available; try again") from e
        if "error" in body:
            error = body["error"]
            raise RoomError(int(error["status"]), str(error["errcode"]), str(error["message"]))
        return body["ok"], int(body.get("position", 0))

    def follow(self, stream: Any) -> None:
        """Release `caught_up` waiters as this process's events stream advances."""
        self._stream = stream
        stream.on_advance(self._advanced)

    def _advanced(self, position: int) -> None:
        waiting, self._waiting = self._waiting, []
        for wanted, done in waiting:
            if wanted <= position:
                if not done.called:
                    done.callback(None)
            else:
                self._waiting.append((wanted, done))

    async def caught_up(self, position: int) -> None:
        """Wait (at most CATCH_UP_S) until this process's events stream covers `position`,
        the writer's after the forwarded write: the client's next request here then sees
        its write."""
        if self._stream is None or self._stream.current >= position:
            return
        done: defer.Deferred[None] = defer.Deferred()
        self._waiting.append((position, done))
        done.addTimeout(CATCH_UP_S, self._reactor, onTimeoutCancel=lambda r, t: None)
        await done


class ShardedEngine(RoomEngine):
    """A RoomEngine that appends to the rooms this process writes and forwards the rest."""

    def __init__(self, *args: Any, roles: Roles, writers: WriterClient, **kwargs: Any) -> None:
        super().__init__(*args, owns_room=roles.writes_room, **kwargs)
        self._roles = roles
        self._writers = writers
        writers.follow(self._stream)
        # Told of each room whose history this writer stored (wiring: the bus).
        self.history_stored: list[Callable[[str], None]] = []

    def stored_history(self, room_id: str, outcomes: Mapping[str, str]) -> None:
        """Backfilled history takes positions below zero, so the events stream never
        announces it; the other processes' cached heads of the room (its visibility
        changes, the served state's redactions) predate it: tell them."""
        if any(status != KNOWN for status in outcomes.values()):
            for hook in list(self.history_stored):
                hook(room_id)

    def forget_others(self) -> None:
        """Drop the cached heads of every room another process writes (after Redis was
        away: what they announced meanwhile on the bus is lost)."""
        self.forget_heads([r for r in list(self._heads) if not self._roles.writes_room(r)])

    async def _forward(self, room_id: str, method: str, args: JsonDict) -> Any:
        answer = await self._call(self._roles.writer_of(room_id), method, args)
        self.forget_heads([room_id])  # read our own write: load the head the writer made
        return answer

    async def _call(self, writer: str, method: str, args: JsonDict) -> Any:
        answer, position = await self._writers.call(writer, method, args)
        await self._writers.caught_up(position)
        return answer

    def stream_position(self) -> int:
        """The events stream position that covers this writer's finished writes (sent with
        answers): its own claim among several writers (the shared `current` is the lowest
        claim of all, which may lie below this writer's newest write), else `current`."""
        return int(getattr(self._stream, "claim", self._stream.current))

    async def append(self, room_id: str, event: NewEvent) -> Event:
        if self._roles.writes_room(room_id):
            return await super().append(room_id, event)
        answer = await self._forward(room_id, "append",
                                     {"room_id": room_id, "event": new_event_json(event)})
        return event_from(answer)

    async def create_room(self, version: RoomVersion, events: list[NewEvent]
                          ) -> tuple[str, list[Event]]:
        if self._roles.instance in self._roles.event_writers:
            return await super().create_room(version, events)
        writer = self._roles.writer_for_new_room(events[0].sender)
        answer = await self._call(writer, "create_room", {
            "version": version.identifier, "events": [new_event_json(e) for e in events]})
        return answer["room_id"], events_from(answer["events"])

    async def ingest_remote(self, room_id: str, events: list[Event], *,
                            outliers: list[Event] | None = None,
                            state_before: Mapping[str, Mapping[StateKey, str]] | None = None,
                            ) -> dict[str, RemoteOutcome]:
        if self._roles.writes_room(room_id):
            return await super().ingest_remote(room_id, events, outliers=outliers,
                                               state_before=state_before)
        answer = await self._forward(room_id, "ingest_remote", {
            "room_id": room_id, "events": [event_json(e) for e in events],
            "outliers": [event_json(e) for e in outliers or []],
            "state_before": states_json(state_before)})
        return {eid: outcome_from(o) for eid, o in answer.items()}

    async def create_remote_room(self, version: RoomVersion, join_event: Event,
                                 state: list[Event], auth_chain: list[Event]) -> RemoteOutcome:
        if self._roles.writes_room(join_event.room_id):
            return await super().create_remote_room(version, join_event, state, auth_chain)
        answer = await self._forward(join_event.room_id, "create_remote_room", {
            "version": version.identifier, "join_event": event_json(join_event),
            "state": [event_json(e) for e in state],
            "auth_chain": [event_json(e) for e in auth_chain]})
        return outcome_from(answer)

    async def store_backfilled(self, room_id: str, events: list[Event],
                               outliers: list[Event] | None = None,
                               state_before: Mapping[str, Mapping[StateKey, str]] | None = None,
                               ) -> dict[str, str]:
        if self._roles.writes_room(room_id):
            outcomes = await super().store_backfilled(room_id, events, outliers, state_before)
            self.stored_history(room_id, outcomes)
            return outcomes
        answer = await self._forward(room_id, "store_backfilled", {
            "room_id": room_id, "events": [event_json(e) for e in events],
            "outliers": [event_json(e) for e in outliers or []],
            "state_before": states_json(state_before)})
        return dict(answer)

    async def store_remote_invite(self, version: RoomVersion, invite: Event) -> None:
        if self._roles.writes_room(invite.room_id):
            return await super().store_remote_invite(version, invite)
        await self._forward(invite.room_id, "store_remote_invite",
                            {"version": version.identifier, "event": event_json(invite)})

    async def store_remote_leave(self, version: RoomVersion, leave: Event) -> None:
        if self._roles.writes_room(leave.room_id):
            return await super().store_remote_leave(version, leave)
        await self._forward(leave.room_id, "store_remote_leave",
                            {"version": version.identifier, "event": event_json(leave)})


# -- the writer side -----------------------------------------------------------------

_METHODS = ("append", "create_room", "ingest_remote", "create_remote_room", "store_backfilled",
            "store_remote_invite", "store_remote_leave")


async def _serve(engine: ShardedEngine, roles: Roles, method: str, args: JsonDict) -> Any:
    """Run one forwarded write on the local engine (RoomEngine's own methods: no loop)."""
    base = RoomEngine
    if method not in _METHODS:
        raise RoomError(404, "M_UNRECOGNIZED", f"unknown engine call {method}")
    if method == "create_room":
        room_id, built = await base.create_room(
            engine, get_room_version(args["version"]),
            [new_event_from(e) for e in args["events"]])
        return {"room_id": room_id, "events": [event_json(e) for e in built]}
    room_id = args["room_id"] if "room_id" in args else event_from(
        args.get("join_event") or args["event"]).room_id
    if not roles.writes_room(room_id):
        raise RoomError(421, "M_UNKNOWN", f"{roles.instance} is not the writer of {room_id}")
    if method == "append":
        return event_json(await base.append(engine, room_id, new_event_from(args["event"])))
    if method == "ingest_remote":
        outcomes = await base.ingest_remote(
            engine, room_id, events_from(args["events"]), outliers=events_from(args["outliers"]),
            state_before=states_from(args["state_before"]))
        return {eid: outcome_json(o) for eid, o in outcomes.items()}
    if method == "create_remote_room":
        return outcome_json(await base.create_remote_room(
            engine, get_room_version(args["version"]), event_from(args["join_event"]),
            events_from(args["state"]), events_from(args["auth_chain"])))
    if method == "store_backfilled":
        outcomes = await base.store_backfilled(engine, room_id, events_from(args["events"]),
                                               events_from(args["outliers"]),
                                               states_from(args["state_before"]))
        engine.stored_history(room_id, outcomes)
        return outcomes
    if method in ("store_remote_invite", "store_remote_leave"):
        await getattr(base, method)(engine, get_room_version(args["version"]),
                                    event_from(args["event"]))
        return None
    raise AssertionError(method)


class InternalResource(Resource):
    """The internal listener: forwarded writes for the rooms this process writes."""

    isLeaf = True

    def __init__(self, engine: ShardedEngine, roles: Roles) -> None:
        super().__init__()
        self._engine = engine
        self._roles = roles
        self._secret = f"Bearer {roles.shared_secret}".encode()

    def render_POST(self, request: Request) -> Any:
        path = request.path.decode("ascii", "replace")
        given = request.getHeader(b"authorization") or b""
        if not hmac.compare_digest(given, self._secret):
            return self._refuse(request, 401, "M_UNKNOWN_TOKEN", "bad internal secret")
        if not path.startswith(PREFIX):
            return self._refuse(request, 404, "M_UNRECOGNIZED", "unknown path")
        try:
            args = json.loads(request.content.read())
        except ValueError:
            return self._refuse(request, 400, "M_NOT_JSON", "body is not JSON")
        d = defer.ensureDeferred(self._run(path[len(PREFIX):], args))
        d.addCallback(lambda body: self._finish(request, body))
        return NOT_DONE_YET

    async def _run(self, method: str, args: JsonDict) -> JsonDict:
        try:
            ok = await _serve(self._engine, self._roles, method, args)
            return {"ok": ok, "position": self._engine.stream_position()}
        except RoomError as e:
            return {"error": {"status": e.status, "errcode": e.errcode, "message": e.message}}
        except Exception as e:
            logger.exception("forwarded %s failed", method)
            return {"error": {"status": 500, "errcode": "M_UNKNOWN", "message": str(e)}}

    @staticmethod
    def _refuse(request: Request, code: int, errcode: str, message: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"error": {"status": code, "errcode": errcode,
                                     "message": message}}).encode()

    @staticmethod
    def _finish(request: Request, body: JsonDict) -> None:
        """The answer, unless the forwarding process hung up (then the write stands)."""
        if request.finished or getattr(request, "_disconnected", False):
            return
        request.setHeader(b"content-type", b"application/json")
        request.write(json.dumps(body).encode())
        request.finish()


def internal_site(engine: ShardedEngine, roles: Roles) -> Site:
    """The internal listener's site: only the engine's forwarded writes, nothing logged."""
    site = Site(InternalResource(engine, roles))
    site.log = lambda request: None  # type: ignore[method-assign]
    return site
