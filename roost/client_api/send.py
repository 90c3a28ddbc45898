"""PUT /send/{type}/{txnId}, PUT /state/{type}/{stateKey}, PUT /redact/{eventId}/{txnId}.

A repeated transaction id from the same device returns the first event id:
the id is stored with the event in one transaction, and a retry that arrives
while the first attempt is still in flight waits for that attempt. Sends do
not look the id up first (a round trip per message): recent ids are kept in
memory, and an older one is caught when its batch is committed (the engine
answers it with the stored event), or, if the retry is refused before that
(the user may no longer send), by a lookup on the refusal.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from twisted.internet import defer

from roost.client_api.errors import MatrixError, forbidden, invalid_param, not_found
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Requester, Router
from roost.client_api.room_view import RoomView, append_event
from roost.rooms.auth import get_named_level, get_power_level
from roost.rooms.engine import NewEvent, RoomEngine
from roost.storage.directory import DirectoryStore
from roost.storage.events import EventStore

TxnKey = tuple[str, str, str]
# Quick retries are answered from memory; an older retry costs its batch a second try
# (see the module docstring). 512 keys of about 0.35 KiB each (bench/memory.py).
RECENT_TXNS = 512
_ALIAS_RE = re.compile(r"^#[^:\s]+:[A-Za-z0-9.\-\[\]:]+$")


class TxnDeduplicator:
    def __init__(self, events: EventStore) -> None:
        self._events = events
        # The callers waiting on each attempt still in flight.
        self._in_flight: dict[TxnKey, list[defer.Deferred[str]]] = {}
        # The newest sends' event ids, oldest first: a quick retry is answered without the
        # engine. A plain dict (insertion order): an OrderedDict's links cost each key more.
        self._recent: dict[TxnKey, str] = {}

    async def once(self, key: TxnKey, send: Callable[[], Awaitable[str]]) -> str:
        """Run `send()` once per key; a concurrent retry waits for the first attempt.

        The attempt is registered before anything is awaited, so a retry
        arriving while the first one is still looking up the stored id joins
        it instead of sending again. Each caller waits on its own Deferred, so
        one that goes away (cancelled) leaves the attempt and the others be.
        """
        waiter: defer.Deferred[str] = defer.Deferred()
        waiters = self._in_flight.get(key)
        if waiters is not None:
            waiters.append(waiter)
        else:
            self._in_flight[key] = [waiter]
            attempt = defer.ensureDeferred(self._stored_or_send(key, send))
            attempt.addBoth(self._finish, key)
        return await waiter

    async def _stored_or_send(self, key: TxnKey, send: Callable[[], Awaitable[str]]) -> str:
        event_id = self._recent.get(key)
        if event_id is None:
            try:
                event_id = await send()
            except MatrixError:
                event_id = await self._events.get_txn_event(*key)
                if event_id is None:
                    raise
        self._recent.pop(key, None)  # a key sent again moves to the newest end
        self._recent[key] = event_id
        if len(self._recent) > RECENT_TXNS:
            del self._recent[next(iter(self._recent))]
        return event_id

    def _finish(self, result: object, key: TxnKey) -> None:
        """Hand the result (or failure) to every waiter; the attempt's own chain ends clean."""
        for waiter in self._in_flight.pop(key, []):
            if not waiter.called:
                waiter.callback(result)  # a Failure goes down the waiter's errback chain


def register(router: Router, engine: RoomEngine, view: RoomView, events: EventStore,
             directory: DirectoryStore | None = None, server_name: str | None = None) -> None:
    """`directory` and `server_name` let canonical alias events be checked against local aliases."""
    dedup = TxnDeduplicator(events)

    async def ensure_room(room_id: str) -> None:
        if await engine.room_version(room_id) is None:
            raise not_found("Unknown room")

    async def send_message(req: ApiRequest) -> JsonDict:
        room_id, event_type = req.params["room_id"], req.params["event_type"]
        content = req.json()
        user = req.user
        await ensure_room(room_id)
        await view.require_joined(room_id, user.user_id)
        if event_type == "m.room.redaction":
            target_id = content.get("redacts")
            if not isinstance(target_id, str):
                raise MatrixError(400, "M_BAD_JSON", "redacts must be an event id")
            return await redaction(req, room_id, target_id, content,
                                   f"send/{room_id}/m.room.redaction")
        # Scoped like the request path: the same txn id in another room is another send.
        key = (user.user_id, user.device_id, f"send/{room_id}/{event_type}/{req.params['txn_id']}")

        async def send() -> str:
            # A retried txn refused here still gets its event id (see TxnDeduplicator).
            await view.check_not_duplicate_annotation(user.user_id, event_type, content)
            event = await append_event(
                engine, room_id, NewEvent(user.user_id, event_type, content, txn_key=key))
            return event.event_id

        return {"event_id": await dedup.once(key, send)}

    async def put_state(req: ApiRequest) -> JsonDict:
        room_id, event_type = req.params["room_id"], req.params["event_type"]
        state_key = req.params.get("state_key", "")
        content = req.json()
        await ensure_room(room_id)
        if event_type == "m.room.create":
            raise forbidden("The create event cannot be replaced")
        await view.require_joined(room_id, req.user.user_id)
        if event_type == "m.room.canonical_alias":
            await _check_canonical_alias(engine, directory, server_name, room_id, content)
        current = await engine.current_state_events(room_id)
        previous = current.get((event_type, state_key))
        if previous is not None and previous.content == content and previous.sender == req.user.user_id:
            return {"event_id": previous.event_id}
        event = await append_event(
            engine, room_id, NewEvent(req.user.user_id, event_type, content, state_key))
        return {"event_id": event.event_id}

    async def redact(req: ApiRequest) -> JsonDict:
        room_id, target_id = req.params["room_id"], req.params["event_id"]
        body = req.json(required=False)
        await ensure_room(room_id)
        await view.require_joined(room_id, req.user.user_id)
        content: JsonDict = {}
        if isinstance(body.get("reason"), str):
            content["reason"] = body["reason"]
        return await redaction(req, room_id, target_id, content, f"redact/{room_id}/{target_id}")

    async def redaction(req: ApiRequest, room_id: str, target_id: str, content: JsonDict,
                        scope: str) -> JsonDict:
        """One redaction, from /redact or from /send (which every room version must accept).

        The auth rules let any same-server redaction in, so whether the user
        may redact this event (their own, or with the redact level) is checked
        here. `redacts` goes where the room version wants it: the engine puts
        it in content from v11 and at the top level before.
        """
        user = req.user
        target = (await engine.get_events([target_id])).get(target_id)
        if target is None or target.event.room_id != room_id:
            raise not_found("Event not found")
        await _check_may_redact(engine, room_id, user, target.event.sender)
        content = {k: v for k, v in content.items() if k != "redacts"}
        key = (user.user_id, user.device_id, f"{scope}/{req.params['txn_id']}")

        async def send() -> str:
            event = await append_event(engine, room_id, NewEvent(
                user.user_id, "m.room.redaction", content, redacts=target_id, txn_key=key))
            return event.event_id

        return {"event_id": await dedup.once(key, send)}

    R = f"{CLIENT_PREFIX}/rooms/{{room_id}}"
    router.add("PUT", f"{R}/send/{{event_type}}/{{txn_id}}", send_message, rate_limit="message")
    router.add("PUT", f"{R}/state/{{event_type}}/{{state_key}}", put_state, rate_limit="message")
    router.add("PUT", f"{R}/state/{{event_type}}", put_state, rate_limit="message")
    router.add("PUT", f"{R}/state/{{event_type}}/", put_state, rate_limit="message")
    router.add("PUT", f"{R}/redact/{{event_id}}/{{txn_id}}", redact, rate_limit="message")


async def _check_may_redact(engine: RoomEngine, room_id: str, user: Requester, author: str) -> None:
    """Own events always; others' only with the room's redact level (spec: redactions)."""
    if author == user.user_id:
        return
    state = await engine.current_state_events(room_id)
    version = await engine.room_version(room_id)
    assert version is not None
    if get_power_level(user.user_id, state, version) < get_named_level(state, "redact", 50):
        raise MatrixError(403, "M_FORBIDDEN", "You may not redact other users' events")


def _new_aliases(content: JsonDict) -> list[str]:
    """The aliases an m.room.canonical_alias content lists; M_INVALID_PARAM if malformed."""
    alias, alt = content.get("alias"), content.get("alt_aliases", [])
    if alt is None:
        alt = []
    if not isinstance(alt, list) or (alias is not None and not isinstance(alias, str)):
        raise invalid_param("alias must be a string and alt_aliases a list")
    aliases = ([alias] if alias is not None else []) + alt
    for value in aliases:
        if not isinstance(value, str) or not _ALIAS_RE.match(value) or len(value.encode()) > 255:
            raise invalid_param(f"{value!r} is not a valid room alias")
    return aliases


async def _check_canonical_alias(engine: RoomEngine, directory: DirectoryStore | None,
                                 server_name: str | None, room_id: str, content: JsonDict) -> None:
    """Spec: new aliases must be valid and, if local, point to this room (M_BAD_ALIAS).

    Aliases already in the current event are not checked again; aliases of
    other servers are only checked for syntax (looking them up needs federation).
    """
    current = (await engine.current_state_events(room_id)).get(("m.room.canonical_alias", ""))
    old_content = current.content if current is not None else {}
    old_alt = old_content.get("alt_aliases")
    old = {a for a in [old_content.get("alias"), *(old_alt if isinstance(old_alt, list) else [])]
           if isinstance(a, str)}
    new = [a for a in _new_aliases(content) if a not in old]
    if directory is None or server_name is None:
        return
    for alias in new:
        if alias.split(":", 1)[1] != server_name:
            continue
        found = await directory.get_alias(alias)
        if found is None or found[0] != room_id:
            raise MatrixError(400, "M_BAD_ALIAS", f"{alias} does not point to this room")
