"""Inbound transactions: `PUT /_matrix/federation/v1/send/{txnId}`.

A transaction is idempotent per (origin, txn id): the first answer is stored
and repeated. Each PDU goes through the checklist of ``rooms/ingest.py``:
steps 1-3 here (format, signatures batched per transaction through the key
ring, content hash), then unknown auth events are fetched (`/event_auth`),
unknown prev events with `/get_missing_events`, and for a gap that remains,
the state before the event with `/state_ids` and `/event`; steps 4-6 and the
append are the engine's (``RoomEngine.ingest_remote``). EDUs (m.typing,
m.receipt, m.presence) go to the sinks wiring passes in, since `federation`
may not import `client_api`.

``EventChecker`` is the one place events fetched from elsewhere (this module,
and ``served.py`` for invites and send_join) get steps 1-3.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from twisted.internet import defer

from roost.federation.fetches import EventFetches
from roost.federation.pulls import EventPuller, StateMap
from roost.federation.transport.client import FederationClient
from roost.federation.transport.server import FederationRequest, FederationRouter
from roost.http.errors import MatrixError
from roost.keys.remote import KeyRing, VerifyRequest
from roost.rooms.engine import ACCEPTED, KNOWN, OUTLIER, SOFT_FAILED, RoomEngine, RoomError
from roost.rooms.events import Event
from roost.rooms.hashing import compute_event_id, server_name_of
from roost.rooms.ingest import (
    IngestError,
    check_content_hash_or_redact,
    check_format,
    signatures_to_verify,
)
from roost.rooms.versions import RoomVersion
from roost.storage.federation_inbound import FederationInboundStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
# (room id, origin) -> whether the room's server ACL admits the origin.
AclCheck = Callable[[str, str], Awaitable[bool]]
MAX_PDUS = 50
MAX_EDUS = 100
MISSING_EVENTS_LIMIT = 20
E2E_EDUS = ("m.device_list_update", "m.signing_key_update", "m.direct_to_device")
TYPING_TIMEOUT_MS = 30_000


def _q(value: str) -> str:
    return quote(value, safe="")


@dataclass
class EduSinks:
    """Where inbound EDUs go; any may be None (that EDU type is then ignored)."""

    # (room_id, user_id, typing, timeout_ms)
    typing: Callable[[str, str, bool, int], None] | None = None
    # (room_id, user_id, receipt_type, event_id, thread_id)
    receipt: Callable[[str, str, str, str, str], Awaitable[None]] | None = None
    # (user_id, presence, status_msg)
    presence: Callable[[str, str, str | None], Awaitable[None]] | None = None
    # (origin, edu_type, content) for m.device_list_update, m.signing_key_update and
    # m.direct_to_device (federation/device_edus.py)
    e2e: Callable[[str, str, JsonDict], Awaitable[None]] | None = None


class EventChecker:
    """Steps 1-3 of the checklist for a batch of PDUs: parse, verify, hash."""

    def __init__(self, keyring: KeyRing) -> None:
        self._keyring = keyring

    async def check(
        self, pdus: Iterable[Any], version: RoomVersion, room_id: str | None = None
    ) -> tuple[list[Event], dict[str, str]]:
        """(good events, redacted where the hash failed; {event id or index: error})."""
        parsed: list[Event] = []
        errors: dict[str, str] = {}
        for i, pdu in enumerate(pdus):
            try:
                parsed.append(check_format(pdu, version, room_id))
            except IngestError as e:
                errors[_pdu_key(pdu, i, version)] = e.reason
        requests: list[tuple[Event, VerifyRequest]] = []
        for event in parsed:
            for check in signatures_to_verify(event):
                requests.append((event, VerifyRequest(check.server_name, check.redacted_pdu,
                                                      check.min_valid_until_ms)))
        failures: set[str] = set()
        if requests:
            try:
                results = await self._keyring.verify_many([r for _, r in requests])
            except Exception as e:  # key servers unreachable: nothing verifies
                results = [e for _ in requests]  # type: ignore[misc]
            for (event, _), error in zip(requests, results, strict=True):
                if error is not None:
                    failures.add(event.event_id)
                    errors[event.event_id] = f"signature check failed: {error}"
        good: list[Event] = []
        for event in parsed:
            if event.event_id in failures:
                continue
            checked, redacted = check_content_hash_or_redact(event)
            if redacted:
                logger.info("content hash of %s does not match: redacted", event.event_id)
            good.append(checked)
        return good, errors


def _pdu_key(pdu: Any, index: int, version: RoomVersion | None = None) -> str:
    """The id a refused PDU's answer goes under: its event id where one can be computed
    (an oversized event's redacted form, which the id covers, is small), else its place."""
    if isinstance(pdu, dict):
        if isinstance(pdu.get("event_id"), str):
            return pdu["event_id"]
        if version is None:
            return f"#{index}"
        try:
            return compute_event_id(pdu, version)
        except Exception:  # not enough of an event to hash
            pass
    return f"#{index}"


class InboundTransactions:
    """The /send endpoint and the fetching of what a room's events need."""

    def __init__(self, engine: RoomEngine, keyring: KeyRing, client: FederationClient,
                 store: FederationInboundStore, clock: Any, edus: EduSinks | None = None,
                 fetches: EventFetches | None = None, acl: AclCheck | None = None) -> None:
        self._engine = engine
        # (room id, origin) -> whether the room's server ACL admits the origin: every PDU
        # and every room EDU of a transaction is checked against its room's ACL.
        self._acl = acl
        self._checker = EventChecker(keyring)
        self._client = client
        self._store = store
        self._clock = clock
        self._edus = edus or EduSinks()
        self.fetches = fetches or EventFetches()
        self._pull = EventPuller(engine, client, self._checker, self.fetches)
        self._in_flight: dict[tuple[str, str], defer.Deferred[JsonDict]] = {}
        self._room_locks: dict[str, defer.DeferredLock] = {}

    def register(self, router: FederationRouter) -> None:
        router.add("PUT", "/_matrix/federation/v1/send/{txnId}", self.on_send)

    async def on_send(self, req: FederationRequest) -> JsonDict:
        origin = req.authenticated_origin
        key = (origin, req.params["txnId"])
        body = req.json()
        pdus, edus = body.get("pdus", []), body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise MatrixError(400, "M_BAD_JSON", "pdus and edus must be lists")
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise MatrixError(400, "M_BAD_JSON",
                                  f"at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs per transaction")
        running = self._in_flight.get(key)
        if running is not None:  # the same transaction retried while we work on it
            waiter: defer.Deferred[JsonDict] = defer.Deferred()
            running.addBoth(lambda r: (waiter.callback(r), r)[1])
            return await waiter
        done = await self._store.get_txn_response(*key)
        if done is not None:
            return done
        d = defer.ensureDeferred(self._process(origin, pdus, edus))
        self._in_flight[key] = d
        try:
            response = await d
            await self._store.set_txn_response(origin, key[1], response,
                                               int(self._clock.seconds() * 1000))
        finally:
            self._in_flight.pop(key, None)
        return response

    async def _process(self, origin: str, pdus: list[Any], edus: list[Any]) -> JsonDict:
        results: dict[str, JsonDict] = {}
        by_room: dict[str, list[Any]] = {}
        for i, pdu in enumerate(pdus):
            room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
            if not isinstance(room_id, str):
                results[_pdu_key(pdu, i)] = {"error": "PDU has no room_id"}
                continue
            by_room.setdefault(room_id, []).append(pdu)
        for room_id, room_pdus in by_room.items():
            results.update(await self._room_pdus(origin, room_id, room_pdus))
        for edu in edus:
            try:
                await self._edu(origin, edu)
            except Exception:
                logger.exception("EDU from %s failed", origin)
        return {"pdus": results}

    async def _room_pdus(self, origin: str, room_id: str, pdus: list[Any]) -> dict[str, JsonDict]:
        version = await self._engine.room_version(room_id)
        if version is None:
            return {_pdu_key(p, i): {"error": "unknown room"} for i, p in enumerate(pdus)}
        if self._acl is not None and not await self._acl(room_id, origin):
            return {_pdu_key(p, i, version): {"error": "Server is banned from this room by its ACL"}
                    for i, p in enumerate(pdus)}
        events, errors = await self._checker.check(pdus, version, room_id)
        results: dict[str, JsonDict] = {k: {"error": v} for k, v in errors.items()}
        if events:
            outcomes = await self.ingest(origin, room_id, version, events)
            for event in events:
                outcome = outcomes.get(event.event_id)
                if outcome is None or outcome[0] in (ACCEPTED, SOFT_FAILED, KNOWN, OUTLIER):
                    results[event.event_id] = {}
                else:
                    results[event.event_id] = {"error": outcome[1] or outcome[0]}
        return results

    async def ingest(self, origin: str, room_id: str, version: RoomVersion,
                     events: list[Event]) -> dict[str, tuple[str, str | None]]:
        """Fetch what the events need from `origin`, then hand them to the engine.

        One room's ingests run one at a time, fetching included: transactions that
        arrive together (from one server or several) often lack the same events, and
        the second, once the first has stored them, finds nothing left to fetch.
        """
        lock = self._room_locks.setdefault(room_id, defer.DeferredLock())
        try:
            async with lock:
                return await self._fetch_and_ingest(origin, room_id, version, events)
        finally:
            if not lock.locked and not lock.waiting:
                self._room_locks.pop(room_id, None)

    async def _fetch_and_ingest(self, origin: str, room_id: str, version: RoomVersion,
                                events: list[Event]) -> dict[str, tuple[str, str | None]]:
        outliers = await self._pull.auth_chains(origin, room_id, version, events)
        events = events + await self._fetch_missing(origin, room_id, version, events)
        state_before, more = await self._fetch_gaps(origin, room_id, version, events)
        try:
            outcomes = await self._engine.ingest_remote(room_id, events, outliers=outliers + more,
                                                        state_before=state_before)
        except RoomError as e:
            return {event.event_id: ("error", e.message) for event in events}
        return {eid: (o.status, o.reason) for eid, o in outcomes.items()}

    async def _fetch_missing(self, origin: str, room_id: str, version: RoomVersion,
                             events: list[Event]) -> list[Event]:
        """Prev events we lack, through `/get_missing_events` from our extremities."""
        have = {e.event_id for e in events}
        wanted = [p for e in events for p in e.prev_event_ids if p not in have]
        missing = await self._pull.unknown(wanted)
        if not missing:
            return []
        latest = [e.event_id for e in events if set(e.prev_event_ids) & set(missing)]
        extremities = await self._engine.forward_extremities(room_id)
        body = {"earliest_events": extremities, "latest_events": latest,
                "limit": MISSING_EVENTS_LIMIT,
                "min_depth": min((e.depth for e in events), default=0) - MISSING_EVENTS_LIMIT}
        answer = await self._pull.post(origin, "get_missing_events",
                                  f"/_matrix/federation/v1/get_missing_events/{_q(room_id)}", body)
        pdus = answer.get("events") if isinstance(answer, dict) else None
        if not isinstance(pdus, list):
            return []
        good, _ = await self._checker.check(pdus[:MISSING_EVENTS_LIMIT * 5], version, room_id)
        self.fetches.received("get_missing_events", (e.event_id for e in good))
        return [e for e in good if e.event_id not in have]

    async def _fetch_gaps(
        self, origin: str, room_id: str, version: RoomVersion, events: list[Event]
    ) -> tuple[dict[str, StateMap], list[Event]]:
        """For an event whose prev events are still unknown: the state before it, taken as
        the state after one of its prev events (`/state_ids`, then `/event`)."""
        have = {e.event_id for e in events}
        lacking = set(await self._pull.unknown(
            p for e in events for p in e.prev_event_ids if p not in have))
        state_before: dict[str, StateMap] = {}
        outliers: dict[str, Event] = {}
        for event in events:
            missing = [p for p in event.prev_event_ids if p in lacking]
            if not missing:
                continue
            state = await self._pull.state_at(origin, room_id, version, missing[0], outliers,
                                              with_event=True)
            if state is not None:
                state_before[event.event_id] = state
        return state_before, list(outliers.values())

    # -- EDUs ----------------------------------------------------------------

    async def _edu(self, origin: str, edu: Any) -> None:
        if not isinstance(edu, dict) or not isinstance(edu.get("content"), dict):
            return
        kind, content = edu.get("edu_type"), edu["content"]
        if kind == "m.typing":
            await self._typing(origin, content)
        elif kind == "m.receipt":
            await self._receipts(origin, content)
        elif kind == "m.presence":
            await self._presence(origin, content)
        elif kind in E2E_EDUS and self._edus.e2e is not None:
            await self._edus.e2e(origin, kind, content)

    async def _joined_from(self, origin: str, room_id: Any, user_id: Any) -> bool:
        """The user is the origin's and joined to the room (else the EDU is ignored)."""
        if not isinstance(room_id, str) or not isinstance(user_id, str):
            return False
        if server_name_of(user_id) != origin:
            return False
        if self._acl is not None and not await self._acl(room_id, origin):
            return False
        try:
            return await self._engine.membership(room_id, user_id) == "join"
        except RoomError:
            return False

    async def _typing(self, origin: str, content: JsonDict) -> None:
        room_id, user_id, typing = content.get("room_id"), content.get("user_id"), content.get("typing")
        if self._edus.typing is None or not isinstance(typing, bool):
            return
        if await self._joined_from(origin, room_id, user_id):
            self._edus.typing(room_id, user_id, typing, TYPING_TIMEOUT_MS)  # type: ignore[arg-type]

    async def _receipts(self, origin: str, content: JsonDict) -> None:
        if self._edus.receipt is None:
            return
        for room_id, by_type in content.items():
            if not isinstance(by_type, dict):
                continue
            for receipt_type, by_user in by_type.items():
                if receipt_type not in ("m.read",) or not isinstance(by_user, dict):
                    continue
                for user_id, receipt in by_user.items():
                    if not isinstance(receipt, dict) or not await self._joined_from(
                            origin, room_id, user_id):
                        continue
                    event_ids = receipt.get("event_ids")
                    data = receipt.get("data") if isinstance(receipt.get("data"), dict) else {}
                    thread = data.get("thread_id") if isinstance(data.get("thread_id"), str) else ""
                    if isinstance(event_ids, list):
                        for event_id in event_ids[:1]:
                            if isinstance(event_id, str):
                                await self._edus.receipt(room_id, user_id, receipt_type, event_id,
                                                         thread)

    async def _presence(self, origin: str, content: JsonDict) -> None:
        push = content.get("push")
        if self._edus.presence is None or not isinstance(push, list):
            return
        for update in push[:MAX_EDUS]:
            if not isinstance(update, dict):
                continue
            user_id, presence = update.get("user_id"), update.get("presence")
            if not isinstance(user_id, str) or server_name_of(user_id) != origin:
                continue
            if presence not in ("online", "unavailable", "offline"):
                continue
            status = update.get("status_msg")
            try:
                await self._edus.presence(user_id, presence,
                                          status if isinstance(status, str) else None)
            except Exception:
                logger.info("presence for %s not applied", user_id)
