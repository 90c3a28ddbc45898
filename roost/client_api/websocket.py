"""The WebSocket push stream at /_roost/ws: sync deltas pushed as they happen, requests answered.

A socket is a long-lived /sync plus a pipe for the few writes a chat client
makes. The pushes are exactly the bodies /sync would return, between the same
tokens, so a client can move between /sync and the socket without losing or
repeating anything. Every request is dispatched through the REST router, so
its validation, errors and rate limits are the REST endpoint's. The protocol is
specified in docs/websocket.md.

Per-socket state is a handful of slots; an idle socket runs no coroutine
(its push loop is a Watch on the notifier), nothing is cached per socket, and
the outgoing buffer is bounded. The ops a socket accepts are websocket_ops.py;
autobahn's part of a socket is websocket_base.py; flow control is
websocket_flow.py; limits and shared parts are websocket_settings.py.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet import defer

from roost.client_api.account_data import check_filter
from roost.client_api.errors import MatrixError, bad_json, invalid_param, missing_param
from roost.client_api.resource import JsonDict, Requester, path_quote
from roost.client_api.stream_token import StreamToken
from roost.client_api.sync_filter import DEFAULT_FILTER, SyncFilter
from roost.client_api.sync_waiter import Watch
from roost.client_api.websocket_base import CompactServerProtocol, Keepalive
from roost.client_api.websocket_flow import Flow, pending_bytes
from roost.client_api.websocket_ops import OPS
from roost.client_api.websocket_settings import SocketServices
from roost.http.bodies import encode_json, parse_json

logger = logging.getLogger(__name__)

V3 = "/_matrix/client/v3"
CLOSE_AUTH = 4001  # the token was refused, expired or revoked
CLOSE_SLOW = 4008  # the client did not read fast enough; resume from the last token


def websocket_resource(services: SocketServices, reactor: Any = None) -> WebSocketResource:
    """The resource to mount at /_roost/ws, with autobahn's limits set above ours.

    Autobahn's own limits fail the connection; ours answer an error frame and
    keep it open, so autobahn's must be the larger.
    """
    settings = services.settings
    kwargs = {"reactor": reactor} if reactor is not None else {}
    factory = SyncSocketFactory(services, **kwargs)
    factory.setProtocolOptions(
        maxFramePayloadSize=4 * settings.max_message_bytes,
        maxMessagePayloadSize=4 * settings.max_message_bytes,
        autoPingInterval=0,  # the factory's Keepalive pings, one timer for every socket
        openHandshakeTimeout=10,
        closeHandshakeTimeout=5,
    )
    resource = WebSocketResource(factory)
    resource.close_all = factory.close_all  # type: ignore[attr-defined]
    resource.open_sockets = factory.open_sockets  # type: ignore[attr-defined]  (metrics)
    return resource


class SyncSocketFactory(WebSocketServerFactory):
    def __init__(self, services: SocketServices, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.services = services
        self.protocol = SyncSocket
        self.open_sockets: set[SyncSocket] = set()
        # On the reactor, not services.clock: pings are real network round trips.
        self.keepalive = Keepalive(self.reactor, self.open_sockets, self._ping_timing)

    def _ping_timing(self) -> tuple[float, float]:
        settings = self.services.settings
        return settings.ping_interval_s, settings.ping_timeout_s

    def socket_opened(self, socket: SyncSocket) -> None:
        self.open_sockets.add(socket)
        self.keepalive.start()

    def socket_closed(self, socket: SyncSocket) -> None:
        self.open_sockets.discard(socket)
        if not self.open_sockets:
            self.keepalive.stop()

    def close_all(self) -> None:
        """At shutdown: tell every client we are going away (1001), so they reconnect."""
        self.keepalive.stop()
        for socket in list(self.open_sockets):
            socket.sendClose(code=1001, reason="server shutting down")


def _error(err: MatrixError) -> JsonDict:
    return err.to_json()


def _encode(frame: JsonDict) -> bytes:
    return encode_json(frame)  # the same compact UTF-8 JSON as an HTTP answer


# -- the socket --------------------------------------------------------------------------


class SyncSocket(CompactServerProtocol):
    """One client's socket: authentication, the push loop, and its queue of requests.

    Idle sockets are what a server holds thousands of, so one is kept small
    (bench/ws_fanout.py measures 1,000): autobahn's part is the compact
    protocol of websocket_base, our state is in slots too, the request queue
    is made on first use, and an idle push loop is a Watch on the notifier
    with one timer, not a suspended coroutine.
    """

    __slots__ = ("_token", "_requester", "_since", "_filter", "_full_state", "_built",
                 "_stream", "_watch", "_queue", "_runner", "_auth_timer", "_flow", "_closing",
                 "_online")

    factory: SyncSocketFactory

    def __init__(self) -> None:
        super().__init__()
        self._token: str | None = None
        self._requester: Requester | None = None
        self._since: StreamToken | None = None  # the last token whose delta was fully written
        self._filter = DEFAULT_FILTER
        self._full_state = False
        self._built: StreamToken | None = None  # the token the last delta was built up to
        self._stream: defer.Deferred[None] | None = None  # a running round of the push loop
        self._watch: Watch | None = None  # the idle push loop, waiting for a change
        self._queue: deque[tuple[Any, JsonDict | MatrixError]] | None = None  # made on first use
        self._runner: defer.Deferred[None] | None = None
        self._auth_timer: Any = None
        self._flow = Flow()
        self._closing = False
        self._online = False

    @property
    def _services(self) -> SocketServices:
        return self.factory.services

    # -- lifecycle -------------------------------------------------------------------------

    def connectionMade(self) -> None:
        """Take over flow control from the HTTP channel that handed us the transport."""
        super().connectionMade()
        try:
            self.transport.unregisterProducer()
            self.transport.registerProducer(self._flow, True)
        except (AttributeError, RuntimeError):
            logger.debug("transport without producer support; relying on the byte count")

    def onConnect(self, request: ConnectionRequest) -> defer.Deferred[None]:
        """Authenticate a Bearer header at the handshake; refuse a bad one with HTTP 401."""
        return defer.ensureDeferred(self._header_auth(request.headers.get("authorization")))

    async def _header_auth(self, header: str | None) -> None:
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ConnectionDeny(401, "M_MISSING_TOKEN: Authorization is not a Bearer token")
        try:
            requester = await self._services.authenticator.authenticate(token.strip())
        except MatrixError as e:
            raise ConnectionDeny(401, f"{e.errcode}: {e.error}") from None
        self._token, self._requester = token.strip(), requester
        return None

    def onOpen(self) -> None:
        self.drop_handshake()
        self.factory.socket_opened(self)
        if self._requester is not None:
            self._authenticated()
        else:
            clock = self._services.clock
            self._auth_timer = clock.callLater(self._services.settings.auth_timeout_s,
                                               self._auth_timed_out)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """Cancel everything this socket waits on: nothing outlives the connection."""
        self.factory.socket_closed(self)
        self._closing = True
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None
        self._stop_stream()
        if self._runner is not None:
            self._runner.cancel()
        self._runner = None
        self._queue = None
        if self._online:
            self._online = False
            self._call_presence("connection_closed")

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if self._requester is None:
            self._close_auth(MatrixError(401, "M_MISSING_TOKEN", "No auth message in time"))

    # -- frames in -------------------------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._closing:
            return
        try:
            frame = self._parse(payload, isBinary)
        except MatrixError as e:
            self._enqueue(None, e)
            return
        op = frame.get("op")
        if op == "auth":
            defer.ensureDeferred(self._auth_message(frame)).addErrback(self._unexpected)
        elif self._requester is None:
            self._enqueue(frame.get("id"), MatrixError(
                401, "M_MISSING_TOKEN", "Authenticate first: send {\"op\": \"auth\", ...}"))
        elif op == "sync":
            self._start_sync(frame)
        else:
            self._enqueue_request(frame)

    def _parse(self, payload: bytes, is_binary: bool) -> JsonDict:
        if is_binary:
            raise MatrixError(400, "M_NOT_JSON", "Binary frames are not accepted")
        if len(payload) > self._services.settings.max_message_bytes:
            raise MatrixError(413, "M_TOO_LARGE", "Frame too large")
        frame = parse_json(payload)
        if not isinstance(frame, dict):
            raise bad_json("Frame must be a JSON object")
        return frame

    async def _auth_message(self, frame: JsonDict) -> None:
        """First-message auth (browsers cannot set headers), or a refreshed token later.

        A later auth message must name the same user and device: it swaps in
        a refreshed token, it does not change who the socket belongs to.
        """
        token = frame.get("token")
        if not isinstance(token, str) or not token:
            self._close_auth(MatrixError(401, "M_MISSING_TOKEN", "auth needs a token"))
            return
        try:
            requester = await self._services.authenticator.authenticate(token)
        except MatrixError as e:
            self._close_auth(e)
            return
        previous = self._requester
        if previous is not None and (previous.user_id, previous.device_id) != (
                requester.user_id, requester.device_id):
            self._reply(frame.get("id"), error=MatrixError(
                403, "M_FORBIDDEN", "A socket cannot change user or device"))
            return
        self._token, self._requester = token, requester
        if previous is None:
            self._authenticated()
        else:
            self._write({"type": "ready", "user_id": requester.user_id,
                         "device_id": requester.device_id})

    def _authenticated(self) -> None:
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None
        assert self._requester is not None
        self._online = True
        self._call_presence("connection_opened")
        self._call_presence("user_active")
        self._write({"type": "ready", "user_id": self._requester.user_id,
                     "device_id": self._requester.device_id})

    def _call_presence(self, name: str) -> None:
        method = getattr(self._services.presence, name, None)
        if method is not None and self._requester is not None:
            method(self._requester.user_id)

    async def _reauthenticate(self) -> Requester | None:
        """Check the token again: a logout or expiry must end the socket, not just new requests."""
        if self._token is None or self._closing:
            return None
        try:
            self._requester = await self._services.authenticator.authenticate(self._token)
        except MatrixError as e:
            self._close_auth(e)
            return None
        return self._requester

    # -- requests --------------------------------------------------------------------------

    def _enqueue_request(self, frame: JsonDict) -> None:
        fid = frame.get("id")
        if not isinstance(fid, str | int) or isinstance(fid, bool):
            self._enqueue(None, missing_param("id"))
        elif frame.get("op") not in OPS:
            self._enqueue(fid, MatrixError(400, "M_UNRECOGNIZED", "Unknown op"))
        else:
            self._enqueue(fid, frame)

    def _enqueue(self, fid: Any, work: JsonDict | MatrixError) -> None:
        """Requests and error answers run in the order sent, like a pipelined connection.

        Going through one queue also puts every answer under flow control: the
        queue stops while the client is not reading, and a full queue is refused.
        """
        if self._queue is None:
            self._queue = deque()
        if len(self._queue) >= self._services.settings.max_queued_requests:
            self._reply(fid, error=MatrixError(429, "M_LIMIT_EXCEEDED", "Too many queued requests",
                                               retry_after_ms=1000))
            return
        self._queue.append((fid, work))
        if self._runner is None:
            runner = defer.ensureDeferred(self._run_queue())
            if not runner.called:  # a queue drained at once has already cleared _runner
                self._runner = runner
            runner.addErrback(self._unexpected)

    async def _run_queue(self) -> None:
        try:
            while self._queue and not self._closing:
                fid, work = self._queue.popleft()
                if isinstance(work, MatrixError):
                    answer: JsonDict | None = {"id": fid, "error": _error(work)}
                else:
                    answer = await self._run(fid, work)
                if answer is None or not await self._writable():
                    return
                self._write(answer)
        finally:
            self._runner = None
            if not self._queue:
                self._queue = None  # an idle socket holds no queue

    async def _run(self, fid: Any, frame: JsonDict) -> JsonDict | None:
        """The answer to one request, dispatched through the REST route; None if auth is lost."""
        requester = await self._reauthenticate()
        if requester is None:
            return None
        self._call_presence("user_active")
        try:
            method, path, body = OPS[frame["op"]](frame, requester)
        except MatrixError as e:
            return {"id": fid, "error": _error(e)}
        raw = b"" if body is None else json.dumps(body).encode("utf-8")
        status, result = await self._services.api.dispatch(method, path, raw, requester)
        if status == 200:
            return {"id": fid, "result": result}
        return {"id": fid, "error": result}  # the REST error body, errcode and all

    # -- the push stream -------------------------------------------------------------------

    def _start_sync(self, frame: JsonDict) -> None:
        defer.ensureDeferred(self._start_sync_async(frame)).addErrback(self._unexpected)

    async def _start_sync_async(self, frame: JsonDict) -> None:
        """Validate since and filter, then (re)start the push loop from `since`."""
        fid = frame.get("id")
        requester = self._requester
        assert requester is not None
        try:
            raw_since = frame.get("since")
            if raw_since is not None and not isinstance(raw_since, str):
                raise invalid_param("since must be a sync token or null")
            since = StreamToken.parse(raw_since, "since") if raw_since else None
            full_state = frame.get("full_state", False)
            if not isinstance(full_state, bool):
                raise invalid_param("full_state must be true or false")
            filt = await self._load_filter(frame.get("filter"), requester)
        except MatrixError as e:
            self._reply(fid, error=e)
            return
        if self._closing:
            return
        self._stop_stream()
        if fid is not None:
            self._reply(fid, result={})
        self._since, self._filter, self._full_state, self._built = since, filt, full_state, None
        self._run_round()

    async def _load_filter(self, raw: Any, requester: Requester) -> SyncFilter:
        """An inline filter object, or a stored filter's id read through the REST route."""
        if raw is None:
            return DEFAULT_FILTER
        if isinstance(raw, dict):
            check_filter(raw)
            return SyncFilter.from_json(raw)
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = str(raw)
        if not isinstance(raw, str):
            raise invalid_param("filter must be an object or a filter id")
        path = f"{V3}/user/{path_quote(requester.user_id)}/filter/{path_quote(raw)}"
        status, body = await self._services.api.dispatch("GET", path, b"", requester)
        if status != 200:
            raise MatrixError(status, body.get("errcode", "M_UNKNOWN"), body.get("error", ""))
        return SyncFilter.from_json(body)

    def _stop_stream(self) -> None:
        """Stop the push loop, whether a round is running or it is waiting for a change."""
        stream, watch = self._stream, self._watch
        self._stream = self._watch = None
        if stream is not None:
            stream.cancel()
        if watch is not None:
            watch.cancel()

    def _run_round(self) -> None:
        """Run the push loop until it has nothing to push and waits (see _push_round)."""
        round_ = defer.ensureDeferred(self._push_round())
        round_.addErrback(self._unexpected)
        if not round_.called:
            self._stream = round_
            round_.addBoth(self._round_ended, round_)

    def _round_ended(self, result: None, round_: defer.Deferred[None]) -> None:
        if self._stream is round_:
            self._stream = None

    def _woken(self, changed: bool) -> None:
        """The watch fired: something changed for the user, or it is time to re-check the token."""
        self._watch = None
        if not self._closing:
            self._run_round()

    async def _push_round(self) -> None:
        """Build from the last token; push a non-empty delta; once nothing is new, watch.

        /sync's long poll run forever, one round per wake-up: the token only
        moves past a delta once it is written, so nothing is lost or repeated.
        The watch is bounded by `recheck_s` so an idle socket's token is
        checked again (expiry, logout) even when nothing happens; between
        rounds no coroutine waits, only the watch and its timer.
        """
        s = self._services
        while not self._closing:
            requester = await self._reauthenticate()
            if requester is None:
                return
            if self._built is None or s.builder.now() != self._built:  # idle re-check: no read
                if not await self._build_and_push(requester.user_id, requester.device_id):
                    return
            if s.builder.now() == self._built:  # nothing landed while building: watch
                self._watch = s.waiter.watch(requester.user_id, s.settings.recheck_s,
                                             self._woken, self._unexpected)
                return

    async def _build_and_push(self, user_id: str, device_id: str | None = None) -> bool:
        """Build the delta from `_since` and push it unless empty; False once closed.

        A method of its own so that the body is not held once pushed.
        """
        builder = self._services.builder
        since, full_state = self._since, self._full_state
        body, token = await builder.build(user_id, since, self._filter, full_state, device_id)
        self._built = token
        if since is None or full_state or not builder.is_empty(body):
            if not await self._push(body, token):
                return False
            self._full_state = False
        return True

    async def _push(self, body: JsonDict, token: StreamToken) -> bool:
        """Write one delta once the client has read the previous ones; False once closed."""
        if not await self._writable():
            return False
        self._write({"type": "sync", "next_batch": self._services.builder.text(token),
                     "body": body})
        if self._closing:
            return False
        self._since = token
        return True

    async def _writable(self) -> bool:
        """Wait while the transport's buffer is full, up to `drain_timeout_s`.

        A client that does not drain it in time is closed with a resume
        frame: the server never holds more than one frame beyond the buffer.
        """
        if self._flow.paused:
            waiting = self._flow.wait()
            timer = self._services.clock.callLater(
                self._services.settings.drain_timeout_s,
                lambda: waiting.called or waiting.callback(False))
            try:
                drained = await waiting
            finally:
                if timer.active():
                    timer.cancel()
            if not drained:
                self._close_slow()
        return not self._closing

    # -- frames out ------------------------------------------------------------------------

    def _reply(self, fid: Any, result: JsonDict | None = None,
               error: MatrixError | None = None) -> None:
        if error is not None:
            self._write({"id": fid, "error": _error(error)})
        else:
            self._write({"id": fid, "result": result if result is not None else {}})

    def _write(self, frame: JsonDict) -> None:
        """Send a frame, unless the unread backlog is already past the byte bound.

        Pushes and queued answers wait for the buffer to drain first, so only
        a client that floods us without reading reaches this bound.
        """
        if self._closing:
            return
        if pending_bytes(self.transport) > self._services.settings.max_pending_bytes:
            self._close_slow()
            return
        self.send_text(_encode(frame))

    def _close_slow(self) -> None:
        """Close with the last token fully written, so the client resumes without a gap."""
        if self._closing:
            return
        since = str(self._since) if self._since is not None else None
        self.send_text(_encode({"type": "resume", "next_batch": since}))
        self._close(CLOSE_SLOW, "client too slow; resume from next_batch")

    def _close_auth(self, err: MatrixError) -> None:
        if self._closing:
            return
        self._write({"type": "error", "error": _error(err)})
        self._close(CLOSE_AUTH, err.errcode)

    def _close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the loops see `_closing` and stop by themselves.

        They are not cancelled here because this may run inside one of them;
        onClose cancels whatever still waits once the connection is gone.
        """
        if self._closing:
            return
        self._closing = True
        self.sendClose(code, reason)

    def _unexpected(self, failure: Any) -> None:
        if not failure.check(defer.CancelledError):
            logger.error("websocket task failed: %s", failure.getTraceback())
