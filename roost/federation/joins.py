"""The client side of remote membership: joining, inviting and leaving across servers.

Joining a room this server is not in (by id with `via` servers, or by a
remote alias resolved with `/query/directory`): `/make_join` with the room
versions we speak, a check of the template (room id, sender, type,
state_key, membership and format: this server never signs an event it did
not check), our hash and signature, `/send_join` (v2), then the returned
state and auth chain are checked (format, room, the signatures each event
must carry, verified through the key ring with keys valid at the event's
time; a bad content hash means the redacted event is used) and handed to
`RoomEngine.create_remote_room`, which runs the auth checks and stores the
room.

Inviting a user of another server appends the invite here, then asks the
invitee's server to countersign it with `/invite` (v2). Leaving a room this
server is not in (rejecting a remote invite) runs `/make_leave` and
`/send_leave` (v2). Errors reach callers as `RoomError`, which the client API
turns into Matrix errors.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import quote

from roost.federation.transport.client import (
    FederationClient,
    FederationClientError,
    HttpResponseError,
)
from roost.keys.remote import KeyRing, VerifyRequest
from roost.rooms.builder import finalize_pdu
from roost.rooms.engine import NewEvent, RoomEngine, RoomError
from roost.rooms.events import Event, EventFormatError, is_valid_server_name
from roost.rooms.hashing import (
    CanonicalJSONError,
    SigningKey,
    check_content_hash,
    compute_event_id,
    server_name_of,
    servers_that_must_sign,
)
from roost.rooms.ingest import key_valid_at
from roost.rooms.redaction import redact_pdu, redacted_view
from roost.rooms.versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from roost.storage.room_state import RoomStateStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
_T = TypeVar("_T")

# Event types a remote invitee is shown to recognise the room (sent as full PDUs).
INVITE_STATE_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                      "m.room.canonical_alias", "m.room.encryption", "m.room.topic")


def _q(value: str) -> str:
    return quote(value, safe="")


class RemoteRooms:
    def __init__(self, client: FederationClient, keyring: KeyRing, engine: RoomEngine,
                 state: RoomStateStore, server_name: str, signing_key: SigningKey,
                 clock: Any) -> None:
        self._client = client
        self._keyring = keyring
        self._engine = engine
        self._state = state
        self._server_name = server_name
        self._key = signing_key
        self._clock = clock

    # -- questions the client API asks ---------------------------------------------

    def is_remote_user(self, user_id: str) -> bool:
        return server_name_of(user_id) != self._server_name

    def is_remote_alias(self, alias: str) -> bool:
        return server_name_of(alias) not in ("", self._server_name)

    async def is_resident(self, room_id: str) -> bool:
        """Whether this server can act in the room itself: it holds the room and either
        one of its users is joined or no other server is (a room of ours everyone left)."""
        if await self._engine.room_version(room_id) is None:
            return False
        if not await self._engine.is_participating(room_id):
            return False  # known only through an invite: the room lives elsewhere
        joined = [user for user, (membership, _) in (await self._state.members(room_id)).items()
                  if membership == "join"]
        return any(not self.is_remote_user(u) for u in joined) or not joined

    # -- aliases -----------------------------------------------------------------------

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]:
        """(room id, servers) for an alias of another server, from that server."""
        server = server_name_of(alias)
        try:
            answer = await self._client.get_json(server, "/_matrix/federation/v1/query/directory",
                                                 {"room_alias": alias})
        except HttpResponseError as e:
            if e.status == 404:
                raise RoomError(404, "M_NOT_FOUND", "Room alias not found") from None
            raise RoomError(502, "M_UNKNOWN", f"{server} could not resolve the alias") from None
        except FederationClientError as e:
            raise RoomError(502, "M_UNKNOWN", f"could not reach {server}: {e}") from None
        room_id = answer.get("room_id") if isinstance(answer, dict) else None
        servers = answer.get("servers") if isinstance(answer, dict) else None
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise RoomError(502, "M_UNKNOWN", f"{server} gave no room id for the alias")
        listed = [s for s in servers if isinstance(s, str)] if isinstance(servers, list) else []
        return room_id, [server, *listed]

    # -- joining -------------------------------------------------------------------

    async def join(self, room_id: str, user_id: str, via: Iterable[str],
                   content: JsonDict | None = None) -> Event:
        """Join `user_id` to a room held by other servers; returns the join event."""
        return await self._through_any(
            room_id, via, "joining", "No known servers to join the room through",
            lambda server: self._join_via(server, room_id, user_id, content or {}))

    async def _through_any(self, room_id: str, via: Iterable[str], doing: str, nowhere: str,
                           attempt: Callable[[str], Awaitable[_T]], *,
                           refusals_first: bool = True) -> _T:
        """`attempt(server)` through each candidate server in turn until one succeeds.

        When every one fails, the error raised is the first refusal (400/403) when
        `refusals_first`, as a refusal says more than an unreachable server; else the
        first error. No candidate at all is a 404 saying `nowhere`.
        """
        errors: list[RoomError] = []
        for server in self._candidates(room_id, [*via, *await self._known_servers(room_id)]):
            try:
                return await attempt(server)
            except RoomError as e:
                logger.info("%s %s through %s failed: %s", doing, room_id, server, e.message)
                errors.append(e)
        if not errors:
            raise RoomError(404, "M_NOT_FOUND", nowhere)
        if refusals_first:
            errors.sort(key=lambda e: 0 if e.status in (400, 403) else 1)
        raise errors[0]

    async def _known_servers(self, room_id: str) -> list[str]:
        """Servers this server has seen in the room (an invite's sender, say), if any."""
        if await self._engine.room_version(room_id) is None:
            return []
        try:
            state = await self._engine.current_state_events(room_id)
        except RoomError:
            return []
        return [server_name_of(e.sender) for (t, _), e in state.items() if t == "m.room.member"]

    def _candidates(self, room_id: str, via: Iterable[str]) -> list[str]:
        servers = [s for s in via if isinstance(s, str) and is_valid_server_name(s)]
        domain = server_name_of(room_id)  # v1-v11 room ids name their creator's server
        if domain and is_valid_server_name(domain):
            servers.append(domain)
        return [s for s in dict.fromkeys(servers) if s != self._server_name]

    async def _join_via(self, server: str, room_id: str, user_id: str, content: JsonDict) -> Event:
        path = f"/_matrix/federation/v1/make_join/{_q(room_id)}/{_q(user_id)}"
        answer = await self._request(server, "GET", path,
                                     args={"ver": sorted(KNOWN_ROOM_VERSIONS)})
        version, template = self._template(answer, room_id, user_id, "join")
        extra = {k: v for k, v in content.items() if k != "membership"}
        join = self._sign_template(template, version, {**extra, **template["content"]})
        path = f"/_matrix/federation/v2/send_join/{_q(room_id)}/{_q(join.event_id)}"
        answer = await self._request(server, "PUT", path, body=self._wire(join))
        if not isinstance(answer, dict):
            raise RoomError(502, "M_UNKNOWN", f"{server}: send_join answer is not an object")
        join = self._returned_event(answer.get("event"), join, version)
        state = await self._checked_events(answer.get("state"), version, room_id)
        auth_chain = await self._checked_events(answer.get("auth_chain"), version, room_id)
        if not any(e.type == "m.room.create" for e in [*state, *auth_chain]):
            raise RoomError(502, "M_UNKNOWN", f"{server}: send_join gave no create event")
        await self._engine.create_remote_room(version, join, state, auth_chain)
        return join

    def _template(self, answer: Any, room_id: str, user_id: str, membership: str
                  ) -> tuple[RoomVersion, JsonDict]:
        """Check a make_join / make_leave answer before anything is signed."""
        if not isinstance(answer, dict) or not isinstance(answer.get("event"), dict):
            raise RoomError(502, "M_UNKNOWN", "the template is not an object")
        try:
            version = get_room_version(answer.get("room_version", "1"))
        except ValueError:
            raise RoomError(400, "M_UNSUPPORTED_ROOM_VERSION",
                            f"room version {answer.get('room_version')!r} is not supported") from None
        template: JsonDict = answer["event"]
        content = template.get("content")
        problems = [
            name for name, ok in (
                ("room_id", template.get("room_id") == room_id),
                ("type", template.get("type") == "m.room.member"),
                ("sender", template.get("sender") == user_id),
                ("state_key", template.get("state_key") == user_id),
                ("membership", isinstance(content, dict) and content.get("membership") == membership),
            ) if not ok
        ]
        if problems:
            raise RoomError(502, "M_UNKNOWN", f"bad template: wrong {', '.join(problems)}")
        return version, template

    def _sign_template(self, template: JsonDict, version: RoomVersion, content: JsonDict) -> Event:
        pdu = {k: v for k, v in template.items()
               if k not in ("signatures", "hashes", "unsigned", "event_id")}
        pdu["content"] = content
        pdu["origin_server_ts"] = int(self._clock.seconds() * 1000)
        try:
            event_id, signed = finalize_pdu(pdu, version, self._server_name, self._key)
            return Event.from_built(signed, version, event_id)
        except (EventFormatError, CanonicalJSONError, ValueError) as e:
            raise RoomError(502, "M_UNKNOWN", f"bad template: {e}") from None

    def _returned_event(self, returned: Any, ours: Event, version: RoomVersion) -> Event:
        """The resident server may countersign our event (restricted joins); else keep ours."""
        if not isinstance(returned, dict):
            return ours
        try:
            event = Event.from_pdu(returned, version)
        except (EventFormatError, CanonicalJSONError):
            return ours
        mine = ours.pdu.get("signatures", {}).get(self._server_name)
        if event.event_id != ours.event_id or event.signatures.get(self._server_name) != mine:
            return ours
        return event

    async def _checked_events(self, pdus: Any, version: RoomVersion, room_id: str) -> list[Event]:
        """Well-formed events of the room whose signatures verify; a bad hash means redacted."""
        if not isinstance(pdus, list):
            raise RoomError(502, "M_UNKNOWN", "send_join answer lacks state or auth_chain")
        events: list[Event] = []
        for pdu in pdus:
            try:
                event = Event.from_pdu(pdu, version)
            except (EventFormatError, CanonicalJSONError, TypeError) as e:
                logger.info("dropping a malformed event from send_join: %s", e)
                continue
            if event.room_id != room_id:
                logger.info("dropping %s from send_join: room %s", event.event_id, event.room_id)
                continue
            events.append(event)
        requests: list[tuple[int, VerifyRequest]] = []
        for i, event in enumerate(events):
            signed = redacted_view(event.pdu, version)
            for server in servers_that_must_sign(event.pdu, version):
                requests.append((i, VerifyRequest(server, signed, key_valid_at(event))))
        results = await self._keyring.verify_many([r for _, r in requests])
        bad = {i for (i, _), error in zip(requests, results, strict=True) if error is not None}
        checked = []
        for i, event in enumerate(events):
            if i in bad:
                logger.info("dropping %s from send_join: bad signature", event.event_id)
                continue
            if not check_content_hash(event.pdu, version.strict_canonical_json):
                event = Event.from_built(redact_pdu(event.pdu, version), version, event.event_id)
            checked.append(event)
        return checked

    # -- knocking ----------------------------------------------------------------------

    async def knock(self, room_id: str, user_id: str, via: Iterable[str],
                    content: JsonDict | None = None) -> tuple[Event, list[JsonDict]]:
        """Knock on a room held by other servers (make_knock, send_knock); the knock
        event, kept here as the user's membership, and the room state sent back."""
        return await self._through_any(
            room_id, via, "knocking on", "No known servers to knock through",
            lambda server: self._knock_via(server, room_id, user_id, content or {}))

    async def _knock_via(self, server: str, room_id: str, user_id: str, content: JsonDict
                         ) -> tuple[Event, list[JsonDict]]:
        path = f"/_matrix/federation/v1/make_knock/{_q(room_id)}/{_q(user_id)}"
        knockable = sorted(v for v, rv in KNOWN_ROOM_VERSIONS.items() if rv.knock_join_rule)
        answer = await self._request(server, "GET", path, args={"ver": knockable})
        version, template = self._template(answer, room_id, user_id, "knock")
        extra = {k: v for k, v in content.items() if k == "reason"}
        knock = self._sign_template(template, version, {**extra, **template["content"]})
        path = f"/_matrix/federation/v1/send_knock/{_q(room_id)}/{_q(knock.event_id)}"
        answer = await self._request(server, "PUT", path, body=self._wire(knock))
        state = answer.get("knock_room_state") if isinstance(answer, dict) else None
        stripped = [e for e in state if isinstance(e, dict)] if isinstance(state, list) else []
        await self._engine.store_remote_invite(version, knock)  # the knocker's membership
        return knock, stripped

    # -- inviting ----------------------------------------------------------------------

    async def invite(self, room_id: str, inviter: str, invitee: str,
                     content: JsonDict | None = None) -> Event:
        """Invite a user of another server: append the invite, then have it countersigned."""
        invite_content = {**(content or {}), "membership": "invite"}
        event = await self._engine.append(room_id, NewEvent(inviter, "m.room.member",
                                                            invite_content, invitee))
        server = server_name_of(invitee)
        body = {"room_version": event.version.identifier, "event": self._wire(event),
                "invite_room_state": await self._invite_state(room_id, inviter)}
        path = f"/_matrix/federation/v2/invite/{_q(room_id)}/{_q(event.event_id)}"
        try:
            answer = await self._request(server, "PUT", path, body=body)
            await self._check_countersigned(answer, event, server)
        except RoomError:
            await self._withdraw_invite(room_id, inviter, invitee)
            raise
        return event

    async def _invite_state(self, room_id: str, inviter: str) -> list[JsonDict]:
        state = await self._engine.current_state_events(room_id)
        keys = [(t, "") for t in INVITE_STATE_TYPES] + [("m.room.member", inviter)]
        return [self._wire(state[k]) for k in keys if k in state]

    async def _check_countersigned(self, answer: Any, ours: Event, server: str) -> None:
        returned = answer.get("event") if isinstance(answer, dict) else None
        if not isinstance(returned, dict):
            raise RoomError(502, "M_UNKNOWN", f"{server}: invite answer has no event")
        try:
            same = compute_event_id({k: v for k, v in returned.items() if k != "unsigned"},
                                    ours.version) == ours.event_id
        except (CanonicalJSONError, ValueError, TypeError, AttributeError):
            same = False
        if not same:
            raise RoomError(502, "M_UNKNOWN", f"{server} changed the invite event")
        try:
            await self._keyring.verify_json_for_server(
                server, redacted_view(returned, ours.version), ours.origin_server_ts)
        except Exception as e:
            raise RoomError(502, "M_UNKNOWN", f"{server} did not sign the invite: {e}") from None

    async def _withdraw_invite(self, room_id: str, inviter: str, invitee: str) -> None:
        """The invitee's server refused: take the invite back, if the inviter may."""
        try:
            await self._engine.append(room_id, NewEvent(inviter, "m.room.member",
                                                        {"membership": "leave"}, invitee))
        except RoomError as e:
            logger.info("could not withdraw the refused invite of %s: %s", invitee, e.message)

    # -- leaving a room this server is not in ----------------------------------------

    async def leave(self, room_id: str, user_id: str, via: Iterable[str],
                    content: JsonDict | None = None) -> Event:
        """Leave (reject an invite to, or withdraw a knock on) a room through a resident
        server."""
        return await self._through_any(
            room_id, via, "leaving", "No known servers to leave the room through",
            lambda server: self._leave_via(server, room_id, user_id, content or {}),
            refusals_first=False)

    async def _leave_via(self, server: str, room_id: str, user_id: str, content: JsonDict) -> Event:
        path = f"/_matrix/federation/v1/make_leave/{_q(room_id)}/{_q(user_id)}"
        version, template = self._template(await self._request(server, "GET", path),
                                           room_id, user_id, "leave")
        extra = {k: v for k, v in content.items() if k == "reason"}
        leave = self._sign_template(template, version, {**extra, "membership": "leave"})
        path = f"/_matrix/federation/v2/send_leave/{_q(room_id)}/{_q(leave.event_id)}"
        await self._request(server, "PUT", path, body=self._wire(leave))
        ingest = getattr(self._engine, "ingest_remote", None)
        if ingest is not None and await self._engine.room_version(room_id) is not None:
            try:
                if await self._engine.is_participating(room_id):
                    await ingest(room_id, [leave])
                else:  # known only from the invite: the leave replaces it here
                    await self._engine.store_remote_leave(version, leave)
            except Exception as e:  # the remote side has it; our copy is a nicety
                logger.info("could not record the remote leave of %s locally: %s", user_id, e)
        return leave

    # -- plumbing ----------------------------------------------------------------------

    @staticmethod
    def _wire(event: Event) -> JsonDict:
        return dict(event.pdu)

    async def _request(self, server: str, method: str, path: str, *, args: Any = None,
                       body: Any = None) -> Any:
        try:
            if method == "GET":
                return await self._client.get_json(server, path, args)
            return await self._client.put_json(server, path, body, args)
        except HttpResponseError as e:
            if e.errcode == "M_INCOMPATIBLE_ROOM_VERSION":
                raise RoomError(400, "M_INCOMPATIBLE_ROOM_VERSION", e.error) from None
            if e.status in (400, 403, 404) or e.errcode == "M_FORBIDDEN":
                # A refusal is passed on as the refusal it is (400 stays 400), not as a 502.
                status = e.status if e.status in (400, 403, 404) else 403
                default = {400: "M_BAD_JSON", 404: "M_NOT_FOUND"}.get(status, "M_FORBIDDEN")
                raise RoomError(status, e.errcode or default, f"{server}: {e.error}") from None
            raise RoomError(502, "M_UNKNOWN", f"{server} answered {e.status}: {e.error}") from None
        except FederationClientError as e:
            raise RoomError(502, "M_UNKNOWN", f"could not reach {server}: {e}") from None
