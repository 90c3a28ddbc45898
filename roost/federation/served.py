"""What other servers ask of us: joins, leaves, invites, and reading rooms and users.

Who may read what is the access module's answer (roost.rooms.access): room
data (backfill, missing events, events, state, auth chains) is served only to
a server with a user joined to the room, else 403 M_FORBIDDEN; events none of
its users could see (history visibility) go out redacted, so the graph still
links up but their content stays here; the state at an event, and its auth
chain, only to a server that may see that event. The room's server ACL is
checked before any of this, by the listener (transport/server.py, through
`router.room_guard`) for every request naming a room, and here for /event. Every
event another server hands us to sign or store (send_join, send_leave,
invite) goes through the same checks as a transaction's PDUs: format,
signatures, content hash, then the auth rules in the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from roost.federation.fetches import EventFetches
from roost.federation.ingest import EduSinks, EventChecker, InboundTransactions
from roost.federation.transport.server import FederationRequest, FederationRouter
from roost.http.errors import MatrixError
from roost.keys.remote import KeyRing
from roost.rooms import public_rooms as public_rooms_lib
from roost.rooms import restricted
from roost.rooms.access import RoomAccess
from roost.rooms.engine import ACCEPTED, KNOWN, LoadedEvent, RoomEngine, RoomError
from roost.rooms.events import Event
from roost.rooms.hashing import SigningKey, check_content_hash, server_name_of, sign_event
from roost.rooms.state_res import create_event_id
from roost.rooms.versions import RoomVersion, UnsupportedRoomVersionError, get_room_version
from roost.storage.directory import DirectoryStore
from roost.storage.events import EventStore
from roost.storage.federation_inbound import FederationInboundStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"
MAX_BACKFILL = 100
MAX_MISSING = 50
# Bounded work: how many events a /backfill or /get_missing_events may start from, and how
# many it may name as already known.
MAX_STARTS = 20
MAX_LATEST = 50  # a transaction's PDUs, each of which may lack its prev events
MAX_EARLIEST = 200
INVITE_STATE_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                      "m.room.canonical_alias", "m.room.encryption")

ProfileLookup = Callable[[str], Awaitable[JsonDict | None]]


def _forbidden(msg: str) -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", msg)


def _room_error(e: RoomError) -> MatrixError:
    return MatrixError(e.status, e.errcode, e.message)


class ServedRooms:
    def __init__(self, engine: RoomEngine, events: EventStore, keyring: KeyRing,
                 inbound: FederationInboundStore, server_name: str, signing_key: SigningKey,
                 clock: Any, access: RoomAccess, directory: DirectoryStore | None = None,
                 profile: ProfileLookup | None = None) -> None:
        self._engine = engine
        self._access = access
        self._events = events
        self._checker = EventChecker(keyring)
        self._inbound = inbound
        self._server_name = server_name
        self._key = signing_key
        self._clock = clock
        self._directory = directory
        self._profile = profile

    def register(self, router: FederationRouter) -> None:
        router.add("GET", V1 + "/make_join/{roomId}/{userId}", self.make_join)
        router.add("PUT", V2 + "/send_join/{roomId}/{eventId}", self.send_join)
        router.add("GET", V1 + "/make_leave/{roomId}/{userId}", self.make_leave)
        router.add("PUT", V2 + "/send_leave/{roomId}/{eventId}", self.send_leave)
        router.add("PUT", V2 + "/invite/{roomId}/{eventId}", self.invite)
        router.add("GET", V1 + "/make_knock/{roomId}/{userId}", self.make_knock)
        router.add("PUT", V1 + "/send_knock/{roomId}/{eventId}", self.send_knock)
        # The v1 forms, which older servers still use: the answers are [200, body].
        router.add("PUT", V1 + "/send_join/{roomId}/{eventId}", self.send_join_v1)
        router.add("PUT", V1 + "/send_leave/{roomId}/{eventId}", self.send_leave_v1)
        router.add("PUT", V1 + "/invite/{roomId}/{eventId}", self.invite_v1)
        router.add("GET", V1 + "/backfill/{roomId}", self.backfill)
        router.add("POST", V1 + "/get_missing_events/{roomId}", self.get_missing_events)
        router.add("GET", V1 + "/event/{eventId}", self.event)
        router.add("GET", V1 + "/state/{roomId}", self.state)
        router.add("GET", V1 + "/state_ids/{roomId}", self.state_ids)
        router.add("GET", V1 + "/event_auth/{roomId}/{eventId}", self.event_auth)
        router.add("GET", V1 + "/query/profile", self.query_profile)
        router.add("GET", V1 + "/query/directory", self.query_directory)
        router.add("GET", V1 + "/publicRooms", self.public_rooms)
        router.add("POST", V1 + "/publicRooms", self.public_rooms)

    async def _auth_chain(self, room_id: str, event_ids: list[str]) -> set[str]:
        """The auth chain of `event_ids`; in v12 with the create event, which events imply
        (through the room id) rather than cite."""
        chain = await self._events.auth_chain_ids(event_ids)
        version = await self._engine.room_version(room_id)
        if version is not None and version.hydra:
            chain.add(create_event_id(room_id))
        return chain

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def _version(self, room_id: str) -> RoomVersion:
        version = await self._engine.room_version(room_id)
        if version is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        return version

    async def _require_in_room(self, origin: str, room_id: str,
                               state: dict[tuple[str, str], str] | None = None) -> None:
        await self._version(room_id)
        if not await self._access.server_in_room(room_id, origin, state):
            raise _forbidden(f"{origin} is not in the room")

    async def _require_may_see(self, origin: str, loaded: LoadedEvent) -> None:
        """The state at an event, and its auth chain, go only to a server that may see
        the event itself."""
        room_id = loaded.event.room_id
        if loaded.event.event_id not in await self._access.server_visible_ids(
                room_id, origin, [loaded]):
            raise _forbidden(f"{origin} may not see that event")

    # -- joins and leaves ------------------------------------------------------

    async def make_join(self, req: FederationRequest) -> JsonDict:
        return await self._make(req, "join")

    async def make_leave(self, req: FederationRequest) -> JsonDict:
        return await self._make(req, "leave")

    async def make_knock(self, req: FederationRequest) -> JsonDict:
        version = await self._version(req.params["roomId"])
        if not version.knock_join_rule:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION",
                              "This room's version does not allow knocking",
                              room_version=version.identifier)
        return await self._make(req, "knock")

    async def send_knock(self, req: FederationRequest) -> JsonDict:
        """Take a remote user's knock; answer with the room state they may see (stripped)."""
        event, _ = await self._send_membership(req, "knock")
        state = await self._engine.current_state_events(event.room_id)
        shown = [state[(t, "")] for t in INVITE_STATE_TYPES if (t, "") in state]
        return {"knock_room_state": [
            {"type": e.type, "state_key": e.state_key, "content": e.content, "sender": e.sender}
            for e in shown]}

    async def _make(self, req: FederationRequest, membership: str) -> JsonDict:
        origin = req.authenticated_origin
        room_id, user_id = req.params["roomId"], req.params["userId"]
        if server_name_of(user_id) != origin:
            raise _forbidden("the user is not on the requesting server")
        version = await self._version(room_id)
        if membership in ("join", "knock"):
            supported = req.args("ver") or ["1"]
            if version.identifier not in supported:
                raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION",
                                      "Your homeserver does not support this room's version",
                                      room_version=version.identifier)
        content: JsonDict = {"membership": membership}
        if membership == "join":
            await self._authorise_restricted(room_id, user_id, version, content)
        try:
            version, template = await self._engine.build_for_remote(
                room_id, user_id, "m.room.member", content, user_id)
        except RoomError as e:
            raise _room_error(e) from None
        template["origin"] = self._server_name
        return {"event": template, "room_version": version.identifier}

    async def _authorise_restricted(self, room_id: str, user_id: str, version: RoomVersion,
                                    content: JsonDict) -> None:
        """A remote user joining a restricted room through us: if they are in one of the
        allowed rooms (as far as this server sees it), one of our users who may invite
        vouches for the join, and send_join adds our signature."""
        state = await self._engine.current_state_events(room_id)
        if not restricted.is_restricted(state, version):
            return
        if await self._engine.membership(room_id, user_id) in ("join", "invite"):
            return
        known = [r for r in restricted.allowed_room_ids(state)
                 if await self._engine.room_version(r) is not None]
        if not known:
            raise MatrixError(400, "M_UNABLE_TO_AUTHORISE_JOIN",
                              "This server is in none of the rooms the join rules allow")
        for allowed in known:
            if await self._engine.membership(allowed, user_id) == "join":
                break
        else:
            raise _forbidden("The user is in none of the rooms the join rules allow")
        authoriser = restricted.choose_authoriser(state, version, self._server_name)
        if authoriser is None:
            raise MatrixError(400, "M_UNABLE_TO_GRANT_JOIN",
                              "No user of this server may invite to the room")
        content["join_authorised_via_users_server"] = authoriser

    async def _countersign_restricted(self, pdu: Any, version: RoomVersion, room_id: str) -> Any:
        """A restricted join naming one of our users as its authoriser gets our signature
        (the auth rules require it), once the joiner is seen to be in an allowed room."""
        content = pdu.get("content") if isinstance(pdu, dict) else None
        via = content.get("join_authorised_via_users_server") if isinstance(content, dict) \
            else None
        sender = pdu.get("sender") if isinstance(pdu, dict) else None
        if not (version.restricted_join_rule and isinstance(via, str) and isinstance(sender, str)
                and server_name_of(via) == self._server_name):
            return pdu
        await self._authorise_restricted(room_id, sender, version, {})
        try:
            return sign_event(pdu, version, self._server_name, self._key)
        except (TypeError, ValueError, AttributeError):
            raise MatrixError(400, "M_BAD_JSON", "the join event is malformed") from None

    async def send_join(self, req: FederationRequest) -> tuple[int, JsonDict]:
        event, outcome_state = await self._send_membership(req, "join")
        state = outcome_state
        auth_ids = await self._auth_chain(event.room_id, [*state.values(), *event.auth_event_ids])
        auth_ids |= set(event.auth_event_ids)
        loaded = await self._engine.get_events([*state.values(), *auth_ids])
        servers = sorted({server_name_of(k) for (t, k), eid in state.items()
                          if t == "m.room.member" and eid in loaded
                          and loaded[eid].event.membership == "join"} | {self._server_name})
        return 200, {
            "origin": self._server_name,
            "state": [loaded[e].event.pdu for e in state.values() if e in loaded],
            "auth_chain": [loaded[e].event.pdu for e in sorted(auth_ids) if e in loaded],
            "event": event.pdu,
            "members_omitted": False,
            "servers_in_room": servers,
        }

    async def send_leave(self, req: FederationRequest) -> tuple[int, JsonDict]:
        await self._send_membership(req, "leave")
        return 200, {}

    async def send_join_v1(self, req: FederationRequest) -> tuple[int, Any]:
        """v1 send_join: the v2 answer's origin, state and auth_chain, as [200, {...}]."""
        _, body = await self.send_join(req)
        return 200, [200, {k: body[k] for k in ("origin", "state", "auth_chain")}]

    async def send_leave_v1(self, req: FederationRequest) -> tuple[int, Any]:
        await self._send_membership(req, "leave")
        return 200, [200, {}]

    async def _send_membership(self, req: FederationRequest,
                               membership: str) -> tuple[Event, dict[tuple[str, str], str]]:
        origin = req.authenticated_origin
        room_id, event_id = req.params["roomId"], req.params["eventId"]
        version = await self._version(room_id)
        pdu = req.json()
        if membership == "join":
            pdu = await self._countersign_restricted(pdu, version, room_id)
        event = await self._one_checked(pdu, version, room_id, event_id)
        if event.type != "m.room.member" or event.membership != membership:
            raise MatrixError(400, "M_BAD_JSON", f"not a {membership} event")
        if event.state_key != event.sender or server_name_of(event.sender) != origin:
            raise MatrixError(400, "M_BAD_JSON", "the event is not the origin's own membership")
        # The origin gives the event to us alone: marked before it is stored, the sender
        # passes it on to the room's other servers when it reads it from the stream. A
        # retry of one already held is not marked again: the sender has read it, or will.
        if not await self._engine.get_events([event.event_id]):
            await self._inbound.relay_on_behalf(event.event_id, origin)
        try:
            outcomes = await self._engine.ingest_remote(room_id, [event])
        except RoomError as e:
            await self._inbound.forget_relay(event.event_id)
            raise _room_error(e) from None
        outcome = outcomes[event.event_id]
        if outcome.status == ACCEPTED and outcome.state_before is not None:
            return event, outcome.state_before
        if outcome.status not in (ACCEPTED, KNOWN):  # a retried one may not be relayed yet
            await self._inbound.forget_relay(event.event_id)
        if outcome.status == KNOWN:
            loaded = (await self._engine.get_events([event.event_id])).get(event.event_id)
            state = await self._engine.state_at_event(event.event_id)
            if loaded is not None and not loaded.rejected and state is not None:
                return event, state
        raise _forbidden(f"{membership} not allowed: {outcome.reason or outcome.status}")

    async def _one_checked(self, pdu: Any, version: RoomVersion, room_id: str,
                           event_id: str) -> Event:
        """Steps 1-3 for one event another server asks us to take; no redaction allowed."""
        events, errors = await self._checker.check([pdu], version, room_id)
        if not events:
            reason = next(iter(errors.values()), "bad event")
            status = 401 if "signature" in reason else 400
            raise MatrixError(status, "M_UNAUTHORIZED" if status == 401 else "M_BAD_JSON",
                                  reason)
        event = events[0]
        if event.event_id != event_id:
            raise MatrixError(400, "M_BAD_JSON", "the event id does not match the URL")
        if not check_content_hash(event.pdu, event.version.strict_canonical_json):
            raise MatrixError(400, "M_BAD_JSON", "the content hash does not match")
        return event

    # -- invites -----------------------------------------------------------------

    async def invite_v1(self, req: FederationRequest) -> tuple[int, Any]:
        """v1 invite: the body is the event itself, in a room of version 1 or 2 (the
        only ones servers that use it create; both share the event format, and state
        resolution, where they differ, plays no part in an invite)."""
        answer = await self._invite(req, get_room_version("1"), req.json(), [])
        return 200, [200, answer]

    async def invite(self, req: FederationRequest) -> JsonDict:
        body = req.json()
        try:
            version = get_room_version(body.get("room_version"))
        except UnsupportedRoomVersionError:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION",
                                  "This server does not support that room version",
                                  room_version=body.get("room_version")) from None
        return await self._invite(req, version, body.get("event"),
                                  body.get("invite_room_state", []))

    async def _invite(self, req: FederationRequest, version: RoomVersion, pdu: Any,
                      stripped: Any) -> JsonDict:
        origin = req.authenticated_origin
        room_id, event_id = req.params["roomId"], req.params["eventId"]
        if stripped == [] and isinstance(pdu, dict):  # v1 carries it in unsigned
            unsigned = pdu.get("unsigned")
            if isinstance(unsigned, dict) and isinstance(unsigned.get("invite_room_state"), list):
                stripped = unsigned["invite_room_state"]
        event = await self._one_checked(pdu, version, room_id, event_id)
        invitee = event.state_key or ""
        if event.type != "m.room.member" or event.membership != "invite":
            raise MatrixError(400, "M_BAD_JSON", "not an invite")
        if server_name_of(invitee) != self._server_name:
            raise MatrixError(400, "M_BAD_JSON", "the invitee is not on this server")
        if server_name_of(event.sender) != origin:
            raise _forbidden("the inviter is not on the requesting server")
        if not isinstance(stripped, list):
            raise MatrixError(400, "M_BAD_JSON", "invite_room_state must be a list")
        known = await self._engine.room_version(room_id)
        if known is not None and known != version:
            raise MatrixError(400, "M_BAD_JSON", "the room has another version here")
        signed = sign_event(event.pdu, version, self._server_name, self._key)
        signed_event = Event.from_built(signed, version, event.event_id)
        try:
            await self._engine.store_remote_invite(version, signed_event)
        except RoomError as e:
            raise _room_error(e) from None
        await self._inbound.add_remote_invite(event.event_id, room_id, invitee, stripped)
        return {"event": signed}

    # -- reading rooms --------------------------------------------------------------

    def _pdus_answer(self, pdus: list[JsonDict]) -> JsonDict:
        return {"origin": self._server_name, "origin_server_ts": self._now_ms(), "pdus": pdus}

    async def backfill(self, req: FederationRequest) -> JsonDict:
        room_id = req.params["roomId"]
        await self._require_in_room(req.authenticated_origin, room_id)
        limit = max(1, min(req.int_arg("limit", 10) or 10, MAX_BACKFILL))
        start = req.args("v")[:MAX_STARTS]
        found = await self._walk_back(room_id, start, set(), limit, include_start=True)
        return self._pdus_answer(await self._access.pdus_for_server(
            room_id, req.authenticated_origin, found))

    async def get_missing_events(self, req: FederationRequest) -> JsonDict:
        room_id = req.params["roomId"]
        await self._require_in_room(req.authenticated_origin, room_id)
        body = req.json()
        earliest, latest = body.get("earliest_events", []), body.get("latest_events", [])
        limit, min_depth = body.get("limit", 10), body.get("min_depth", 0)
        if not isinstance(earliest, list) or not isinstance(latest, list) \
                or not isinstance(limit, int) or not isinstance(min_depth, int):
            raise MatrixError(400, "M_BAD_JSON", "bad get_missing_events body")
        limit = max(1, min(limit, MAX_MISSING))
        if len(latest) > MAX_LATEST or len(earliest) > MAX_EARLIEST:
            raise MatrixError(400, "M_BAD_JSON",
                              f"at most {MAX_LATEST} latest and {MAX_EARLIEST} earliest events")
        latest_events = await self._engine.get_events([e for e in latest if isinstance(e, str)])
        starts = [p for le in latest_events.values() if le.event.room_id == room_id
                  for p in le.event.prev_event_ids]
        stop = {e for e in earliest if isinstance(e, str)} | set(latest_events)
        found = await self._walk_back(room_id, starts, stop, limit, include_start=True,
                                      min_depth=min_depth)
        return {"events": await self._access.pdus_for_server(
            room_id, req.authenticated_origin, list(reversed(found)))}

    async def _walk_back(self, room_id: str, start: list[str], stop: set[str], limit: int,
                         include_start: bool, min_depth: int = 0) -> list[LoadedEvent]:
        """Events reached from `start` through prev events, newest first, up to `limit`."""
        result: list[LoadedEvent] = []
        seen = set(stop)
        frontier = [e for e in start if e not in seen]
        while frontier and len(result) < limit:
            seen.update(frontier)
            loaded = await self._engine.get_events(frontier)
            batch = sorted((le for le in loaded.values()
                            if le.event.room_id == room_id and le.stream_ordering is not None
                            and not le.rejected and le.event.depth >= min_depth),
                           key=lambda e: -e.event.depth)
            result.extend(batch[:limit - len(result)])
            frontier = [p for e in batch for p in e.event.prev_event_ids if p not in seen]
            frontier = list(dict.fromkeys(frontier))
        return result if include_start else result[1:]

    async def event(self, req: FederationRequest) -> JsonDict:
        event_id = req.params["eventId"]
        loaded = (await self._engine.get_events([event_id])).get(event_id)
        if loaded is None or loaded.rejected:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown event")
        room_id, origin = loaded.event.room_id, req.authenticated_origin
        if not await self._access.server_allowed(room_id, origin):
            raise _forbidden("Server is banned from this room by its ACL")
        await self._require_in_room(origin, room_id)
        return self._pdus_answer(await self._access.pdus_for_server(room_id, origin, [loaded]))

    async def _state_at(self, req: FederationRequest) -> tuple[dict[tuple[str, str], str], set[str]]:
        room_id = req.params["roomId"]
        event_id = req.arg("event_id")
        if event_id is None:
            raise MatrixError(400, "M_MISSING_PARAM", "event_id is required")
        await self._version(room_id)
        loaded = (await self._engine.get_events([event_id])).get(event_id)
        if loaded is None or loaded.event.room_id != room_id:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown event")
        state = await self._engine.state_at_event(event_id)
        if state is None:
            raise MatrixError(404, "M_NOT_FOUND", "No state known at that event")
        if not await self._access.server_in_room(room_id, req.authenticated_origin) \
                and not await self._access.server_in_room(room_id, req.authenticated_origin, state):
            raise _forbidden(f"{req.authenticated_origin} is not in the room")
        await self._require_may_see(req.authenticated_origin, loaded)
        chain = await self._auth_chain(room_id, list(state.values()))
        return state, chain

    async def state(self, req: FederationRequest) -> JsonDict:
        state, chain = await self._state_at(req)
        loaded = await self._engine.get_events([*state.values(), *chain])
        return {"pdus": [loaded[e].event.pdu for e in state.values() if e in loaded],
                "auth_chain": [loaded[e].event.pdu for e in sorted(chain) if e in loaded]}

    async def state_ids(self, req: FederationRequest) -> JsonDict:
        state, chain = await self._state_at(req)
        return {"pdu_ids": list(state.values()), "auth_chain_ids": sorted(chain)}

    async def event_auth(self, req: FederationRequest) -> JsonDict:
        room_id, event_id = req.params["roomId"], req.params["eventId"]
        await self._require_in_room(req.authenticated_origin, room_id)
        loaded = (await self._engine.get_events([event_id])).get(event_id)
        if loaded is None or loaded.event.room_id != room_id:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown event")
        await self._require_may_see(req.authenticated_origin, loaded)
        chain = await self._auth_chain(room_id, [event_id])
        chain.discard(event_id)
        events = await self._engine.get_events(sorted(chain))
        return {"auth_chain": [le.event.pdu for le in events.values()]}

    # -- queries -------------------------------------------------------------------

    async def query_profile(self, req: FederationRequest) -> JsonDict:
        user_id = req.arg("user_id")
        if user_id is None:
            raise MatrixError(400, "M_MISSING_PARAM", "user_id is required")
        if server_name_of(user_id) != self._server_name:
            raise MatrixError(400, "M_INVALID_PARAM", "not a user of this server")
        profile = await self._profile(user_id) if self._profile is not None else None
        if profile is None:
            raise MatrixError(404, "M_NOT_FOUND", "Profile not found")
        field = req.arg("field")
        if field is not None:
            if field not in ("displayname", "avatar_url"):
                raise MatrixError(400, "M_INVALID_PARAM", "unknown field")
            return {field: profile[field]} if profile.get(field) is not None else {}
        return {k: v for k, v in profile.items() if v is not None}

    async def query_directory(self, req: FederationRequest) -> JsonDict:
        alias = req.arg("room_alias")
        if alias is None:
            raise MatrixError(400, "M_MISSING_PARAM", "room_alias is required")
        found = await self._directory.get_alias(alias) if self._directory is not None else None
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", "Room alias not found")
        room_id = found[0]
        if not await self._access.server_allowed(room_id, req.authenticated_origin):
            raise _forbidden("Server is banned from this room by its ACL")
        state = await self._engine.current_state_events(room_id)
        servers = {server_name_of(k) for (t, k), e in state.items()
                   if t == "m.room.member" and e.membership == "join"}
        servers.discard(self._server_name)
        return {"room_id": room_id, "servers": [self._server_name, *sorted(servers)]}

    async def public_rooms(self, req: FederationRequest) -> JsonDict:
        if self._directory is None:
            return {"chunk": [], "total_room_count_estimate": 0}
        body = req.json() if req.method == "POST" and req.content is not None else {}
        try:
            limit, since, term = public_rooms_lib.parse_query(body, req.int_arg("limit"),
                                                              req.arg("since"))
        except public_rooms_lib.BadDirectoryQuery as e:
            raise MatrixError(400, "M_BAD_JSON", str(e)) from None
        if limit is not None and limit < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "limit must not be negative")
        offset, size = public_rooms_lib.page_window(since, limit)
        rooms, total = await self._directory.public_rooms_page(offset, size, term)
        listed = await public_rooms_lib.entries(rooms, self._contents)
        return public_rooms_lib.cut_page(listed, offset, size, total)

    async def _contents(self, event_ids: list[str]) -> dict[str, Any]:
        loaded = await self._engine.get_events(event_ids)
        return {eid: e.event.content for eid, e in loaded.items()}



def register_all(router: FederationRouter, engine: RoomEngine, events: EventStore, keyring: KeyRing,
                 client: Any, inbound: FederationInboundStore, server_name: str,
                 signing_key: SigningKey, clock: Any, access: RoomAccess,
                 directory: DirectoryStore | None = None,
                 profile: ProfileLookup | None = None, edus: EduSinks | None = None,
                 fetches: EventFetches | None = None) -> None:
    """Every endpoint of this module and of ingest.py (/send), on `router`, with the
    access module's server-ACL check as the router's room guard."""
    router.room_guard = access.server_allowed
    InboundTransactions(engine, keyring, client, inbound, clock, edus, fetches,
                        acl=access.server_allowed).register(router)
    ServedRooms(engine, events, keyring, inbound, server_name, signing_key, clock, access,
                directory, profile).register(router)
