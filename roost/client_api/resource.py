"""The JSON resource base that every client endpoint sits on.

It owns what every endpoint would otherwise repeat: routing with 404/405
M_UNRECOGNIZED, CORS and OPTIONS, the body size limit (checked while the body
arrives, see roost.http.limits), JSON parsing with M_NOT_JSON/M_BAD_JSON,
turning an access token into a `Requester`, Matrix error bodies for every
failure, cancelling the handler when the client goes away, and one log line
per request.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from twisted.internet import address, defer
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from roost.client_api.errors import MatrixError, limit_exceeded
from roost.client_api.guests import check_guest
from roost.http.bodies import Answered, QueryArgs, RawJson, json_object, parse_json, write_json
from roost.http.channel import lean_channel
from roost.http.limits import LimitedRequest, LimitedSite
from roost.http.routing import RouteTable, compile_template
from roost.http.tasks import Task

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_request_counter = itertools.count(1)

CLIENT_PREFIX = "/_matrix/client/(?:v3|r0|v1)"


@dataclass(frozen=True)
class Requester:
    """Who is making a request: the user, their device and login session."""

    user_id: str
    device_id: str
    session_id: str
    is_admin: bool = False
    app_service: str | None = None  # the application service acting, if any
    unlimited: bool = False  # an application service registered with rate_limited: false
    is_guest: bool = False


class Authenticator(Protocol):
    async def authenticate(self, token: str, as_user: str | None = None) -> Requester:
        """`as_user`: the `user_id` query parameter an application service acts as."""
        ...

    def known(self, token: str) -> Requester | None:
        """What `authenticate(token)` answers, if that is a Requester decided from memory
        alone; None otherwise (then `authenticate` is awaited)."""
        ...


class RequestObserver(Protocol):
    """Metrics' view of requests: which route each matched, and how it ended."""

    def matched(self, request: server.Request, method: str, route: str) -> None: ...
    def finished(self, request: server.Request, status: int, seconds: float) -> None: ...


class RateLimiter(Protocol):
    async def take(self, key: str, per_second: float, burst: int, cost: float = 1.0) -> float: ...


@dataclass(frozen=True)
class RateLimit:
    """A token bucket's shape: a steady rate and a burst allowance."""

    per_second: float
    burst: int


@dataclass
class ApiRequest(QueryArgs):
    """What a handler needs of an HTTP request, parsed once."""

    http: server.Request
    method: str
    path: str
    params: dict[str, str]
    requester: Requester | None
    raw_body: bytes
    _json: Any = field(default=None, repr=False)
    _parsed: bool = False

    @property
    def user(self) -> Requester:
        if self.requester is None:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
        return self.requester

    def json(self, required: bool = True) -> JsonDict:
        """The body as a JSON object; M_NOT_JSON or M_BAD_JSON otherwise."""
        if not self._parsed:
            self._parsed = True
            self._json = parse_json(self.raw_body) if self.raw_body.strip() else None
        return json_object(self._json, required)


# A handler answers with JSON (a body, or a status and body), or writes its own answer
# (media files) and returns ANSWERED.
Handler = Callable[[ApiRequest], Awaitable[JsonDict | tuple[int, JsonDict] | Answered]]


class FastHandler(Protocol):
    """A route's handler for its usual case, without a coroutine (Route.fast).

    Called for a GET whose requester is known without an await (not a guest, not an
    application service acting as another user) on a route without a rate limit,
    before anything of the general path is done. It declines (False) with nothing
    done, and the request takes the general path; or it takes the request (True) and
    answers as the general handler would, through `answer_taken`, `continue_taken`
    (the rest as a coroutine) or `cancelled_taken` (the client went away)."""

    def __call__(self, request: server.Request, requester: Requester, rid: str,
                 start: float) -> bool: ...


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool  # True: token required; False: none
    auth_optional: bool = False
    rate_limit: str | None = None  # the name of a bucket in JsonResource's limits
    # The handler reads the (possibly large, spooled) body from `http.content` itself.
    stream_body: bool = False
    path: str = ""  # the template it was added with: the metrics' route label
    fast: FastHandler | None = None  # its usual case without a coroutine (FastHandler)


class Router(RouteTable[Route]):
    """The client API's routes, filled by each area module."""

    def add(self, method: str, path: str, handler: Handler, *, auth: bool = True,
            auth_optional: bool = False, rate_limit: str | None = None,
            stream_body: bool = False, fast: FastHandler | None = None) -> None:
        """`path` is a template as roost.http.routing takes it; `fast` only for a GET
        route without a rate limit (FastHandler)."""
        if fast is not None and (method != "GET" or rate_limit is not None
                                 or not re.fullmatch(r"[\w.-]+", path.rpartition("/")[2])):
            raise ValueError("a fast handler is for a GET route without a rate limit, whose "
                             "path ends in a plain segment")
        self.insert(path, Route(method, compile_template(path), handler, auth, auth_optional,
                                rate_limit, stream_body, path, fast))


class ForwardedRequest(LimitedRequest):
    """Behind a reverse proxy (`listeners.client.x_forwarded`): the client's address is the
    last one in X-Forwarded-For, which the proxy sets, not the proxy's own. Rate limits by
    address and devices' last seen IP depend on it."""

    def getClientAddress(self) -> Any:
        # getHeader("X-Forwarded-For") read from the header dict (the last value, as
        # text); the address object of each host kept (a long poll asks on every request).
        values = self.requestHeaders._rawHeaders.get(b"X-Forwarded-For")
        forwarded = values[-1].decode("utf8") if values else None
        if forwarded:
            host = forwarded.split(",")[-1].strip()
            if host:
                found = _forwarded_addresses.get(host)
                if found is None:
                    found = address.IPv6Address("TCP", host, 0) if ":" in host \
                        else address.IPv4Address("TCP", host, 0)
                    if len(_forwarded_addresses) >= _FORWARDED_KEPT:
                        _forwarded_addresses.clear()
                    _forwarded_addresses[host] = found
                return found
        return super().getClientAddress()


# X-Forwarded-For host -> its address object (immutable: shared by every request).
_forwarded_addresses: dict[str, Any] = {}
_FORWARDED_KEPT = 10_000


class RoostSite(LimitedSite):
    """The client listener's Site: bodies limited (413 early, never a reset; see
    roost.http.limits), large ones spooled to disk, no access log of Twisted's own, and
    request headers stored once (roost.http.channel)."""

    protocol = lean_channel
    access_log = False  # FastRequest.answer skips `log` (below) then

    def __init__(self, resource: Resource, max_body_bytes: int, x_forwarded: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(resource, max_body_bytes, **kwargs)
        if x_forwarded:
            self.requestFactory = ForwardedRequest

    def log(self, request: server.Request) -> None:
        """Access logging is done by JsonResource, with the user and without tokens."""


_TOKEN_IN_QUERY = re.compile(r"(access_token=)[^&]*")
_LATER = object()  # JsonResource._requester_now: the answer needs an await
# JsonResource._fast_routes: request paths -> the route with a fast handler they match
# (None: none), for the few paths such routes have; bounded.
_FAST_PATHS_KEPT = 256


class JsonResource(Resource):
    """A leaf resource dispatching every path below it through a `Router`."""

    isLeaf = True

    def __init__(
        self,
        router: Router,
        authenticator: Authenticator | None,
        limiter: RateLimiter | None = None,
        limits: dict[str, RateLimit] | None = None,
    ) -> None:
        super().__init__()
        self._router = router
        self._auth = authenticator
        self._limiter = limiter
        self._limits = limits or {}
        # Set by the metrics listener's wiring: told of each request's route and end.
        self.observer: RequestObserver | None = None
        # Set by the wiring: told of each authenticated request's requester and address
        # (devices' last seen time and IP).
        self.seen: Callable[[Requester, str], None] | None = None
        # Whether routes' fast handlers are used (Route.fast); off, every request takes
        # the general path (tests compare the two).
        self.fast = True
        self._fast_routes: dict[bytes, Route | None] = {}
        self._fast_routes_of = -1  # the router's route count they were found with
        # The last path segments of the routes with a fast handler: a GET ending in
        # another is not looked up (its route is matched once, by `_handle`).
        self._fast_ends: frozenset[bytes] = frozenset()

    def render(self, request: server.Request) -> int:
        rid = f"req{next(_request_counter)}"
        when_lost = getattr(request, "when_lost", None)
        if self.observer is None and when_lost is not None:
            # A plain callback rather than a notifyFinish Deferred per request
            # (roost.http.answers): the handler is cancelled if the client goes. The
            # handler runs as a Task (roost.http.tasks), without a Deferred of its own.
            if request.method == b"GET" and self.fast and self._take_fast(request, rid):
                return server.NOT_DONE_YET
            task = Task(self._handle(request, rid), log_unhandled)
            if not task.done:
                when_lost(task.cancel)
            return server.NOT_DONE_YET
        finished = request.notifyFinish()  # before handling: an answer may come at once
        if self.observer is not None:
            observer, start = self.observer, time.monotonic()

            def observe(result: Any) -> Any:
                observer.finished(request, request.code, time.monotonic() - start)
                return result

            finished.addBoth(observe)
        d = defer.ensureDeferred(self._handle(request, rid))
        finished.addErrback(lambda _f: d.cancel())
        d.addErrback(log_unhandled)
        return server.NOT_DONE_YET

    async def _handle(self, request: server.Request, rid: str) -> None:
        request_id.set(rid)
        start = time.monotonic()
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace")
        user = "-"
        status = 500
        body: JsonDict = {}
        headers: dict[str, str] = {}
        try:
            if method == "OPTIONS":
                status, body = 200, {}
            elif getattr(request, "too_large", False):
                raise MatrixError(413, "M_TOO_LARGE", "Request body too large")
            else:
                route, params, known = self._router.match(method, path)
                if route is None:
                    status = 405 if known else 404
                    raise MatrixError(status, "M_UNRECOGNIZED", "Unrecognized request")
                if self.observer is not None:
                    self.observer.matched(request, method, route.path)
                requester = self._requester_now(request, route)
                if requester is _LATER:
                    requester = await self._requester(request, route)
                if requester is not None:
                    user = requester.user_id
                    if self.seen is not None and requester.app_service is None:
                        peer = request.getClientAddress()  # _client_ip, inline
                        self.seen(requester, getattr(peer, "host", None) or "unknown")
                    if requester.is_guest:
                        check_guest(method, path)
                if route.rate_limit is not None:  # no coroutine to await otherwise
                    await self._take_rate_limit(request, route, requester)
                raw = b""
                if request.content is not None and not route.stream_body:
                    raw = request.content.read()
                api = ApiRequest(request, method, path, params, requester, raw)
                result = await route.handler(api)
                if isinstance(result, Answered):
                    logger.info("%s %s %s %d %.1fms %s", rid, method, _clean(request),
                                request.code, (time.monotonic() - start) * 1000, user)
                    return
                status, body = result if isinstance(result, tuple) else (200, result)
        except MatrixError as e:
            status, body, headers = e.status, e.to_json(), e.headers
        except defer.CancelledError:
            logger.info("%s %s cancelled: client went away", method, _clean(request))
            return
        except Exception:
            logger.exception("%s %s failed", method, _clean(request))
            status, body = 500, {"errcode": "M_UNKNOWN", "error": "Internal server error"}
        answer_taken(request, rid, start, user, status, body, headers)

    def _take_fast(self, request: server.Request, rid: str) -> bool:
        """Hand a GET to its route's fast handler (Route.fast), when the route has one and
        what `_handle` does before calling the handler needs no await: the route found
        without parameters, the requester known from memory (not a guest: their check
        stays `_handle`'s), no rate limit; then devices' last seen, as `_handle` does.
        False: nothing done, `_handle` runs."""
        if self._fast_routes_of != len(self._router.routes):  # (routes added: look again)
            self._fast_routes.clear()
            self._fast_routes_of = len(self._router.routes)
            self._fast_ends = frozenset(r.path.rpartition("/")[2].encode()
                                        for r in self._router.routes if r.fast is not None)
        if request.path.rpartition(b"/")[2] not in self._fast_ends:
            return False
        start = time.monotonic()
        route = self._fast_routes.get(request.path, _LATER)
        if route is _LATER:
            route = self._fast_route(request.path)
        if route is None or route.fast is None or getattr(request, "too_large", False):
            return False
        try:
            requester = self._requester_now(request, route)
        except MatrixError:
            return False  # (a malformed Authorization header: `_handle` answers it)
        if requester is _LATER or requester is None or requester.is_guest:
            return False
        if not route.fast(request, requester, rid, start):
            return False
        if self.seen is not None and requester.app_service is None:
            peer = request.getClientAddress()  # _client_ip, inline
            self.seen(requester, getattr(peer, "host", None) or "unknown")
        return True

    def _fast_route(self, raw_path: bytes) -> Route | None:
        """The route with a fast handler that a GET of `raw_path` matches without path
        parameters, else None; remembered."""
        try:
            route, params, _ = self._router.match("GET", raw_path.decode("utf-8", "replace"))
        except MatrixError:
            route = None
        found = route if route is not None and route.fast is not None and not params else None
        if len(self._fast_routes) >= _FAST_PATHS_KEPT:
            self._fast_routes.clear()
        self._fast_routes[raw_path] = found
        return found

    def _requester_now(self, request: server.Request, route: Route) -> Any:
        """`_requester`'s answer when no await is needed (no token needed, or a token
        known in memory: an ordinary client's every request after its first), else
        _LATER. A coroutine per request less."""
        # _access_token's usual case inline: a bearer header seen before.
        values = request.requestHeaders._rawHeaders.get(b"Authorization")
        token = _bearer_tokens.get(values[-1]) if values else None
        if token is None:
            token = _access_token(request)  # a malformed Authorization header is refused
        if not route.auth and not route.auth_optional:
            return None
        if token is None or self._auth is None:
            return _LATER
        query = request.uri.partition(b"?")[2]
        if b"user_id" in query or b"%" in query:
            return _LATER
        known = self._auth.known(token)
        return _LATER if known is None else known

    async def _requester(self, request: server.Request, route: Route) -> Requester | None:
        token = _access_token(request)
        if not route.auth and not route.auth_optional:
            return None
        if token is None:
            if route.auth_optional:
                return None
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
        if self._auth is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown access token")
        as_user = None
        query = request.uri.partition(b"?")[2]
        # The arguments are parsed only if they may hold user_id (an application service
        # acting as a user): a key can only spell it through an escape otherwise.
        if b"user_id" in query or b"%" in query:
            as_user = request.args.get(b"user_id", [b""])[0].decode("utf-8", "replace") or None
        return await self._auth.authenticate(token, as_user)

    async def _take_rate_limit(
        self, request: server.Request, route: Route, requester: Requester | None
    ) -> None:
        """Charge the route's bucket: per user when logged in, else per client address."""
        if route.rate_limit is None or self._limiter is None:
            return
        if requester is not None and requester.unlimited:
            return
        limit = self._limits.get(route.rate_limit)
        if limit is None:
            return
        who = requester.user_id if requester is not None else _client_ip(request)
        wait = await self._limiter.take(f"{route.rate_limit}:{who}", limit.per_second, limit.burst)
        if wait > 0:
            raise limit_exceeded(int(wait * 1000) + 1)

    async def dispatch(self, method: str, path: str, body: bytes, requester: Requester,
                       query_args: dict[str, str] | None = None) -> tuple[int, JsonDict]:
        """Run the route for (method, path) without an HTTP request; returns (status, body).

        The WebSocket's operations come through here so that they reuse exactly
        the REST handlers: the same validation, errors and rate limits. Every
        failure becomes a Matrix error body, as it would over HTTP.
        """
        stand_in = _NoHttp({k.encode(): [v.encode()] for k, v in (query_args or {}).items()})
        try:
            route, params, known = self._router.match(method, path)
            if route is None:
                raise MatrixError(405 if known else 404, "M_UNRECOGNIZED", "Unrecognized request")
            if requester.is_guest:
                check_guest(method, path)
            await self._take_rate_limit(stand_in, route, requester)  # type: ignore[arg-type]
            api = ApiRequest(stand_in, method, path, params, requester, body)  # type: ignore[arg-type]
            result = await route.handler(api)
            if isinstance(result, Answered):
                raise MatrixError(400, "M_UNRECOGNIZED", "Not available over the socket")
        except MatrixError as e:
            return e.status, e.to_json()
        except defer.CancelledError:
            raise
        except Exception:
            logger.exception("%s %s (socket) failed", method, path)
            return 500, {"errcode": "M_UNKNOWN", "error": "Internal server error"}
        return result if isinstance(result, tuple) else (200, result)


class _NoHttp:
    """Stands in for the HTTP request of a dispatched call: handlers only read its query args."""

    def __init__(self, args: dict[bytes, list[bytes]]) -> None:
        self.args = args


_CORS = (
    (b"Access-Control-Allow-Origin", b"*"),
    (b"Access-Control-Allow-Methods", b"GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    (b"Access-Control-Allow-Headers", b"X-Requested-With, Content-Type, Authorization, Date"),
)
# Written with every JSON answer, encoded once (roost.http.answers).
CORS_HEADERS = b"".join(b"%s: %s\r\n" % pair for pair in _CORS)


# Authorization header bytes -> the bearer token in it.
_bearer_tokens: dict[bytes, str] = {}
_BEARER_KEPT = 10_000


def _access_token(request: server.Request) -> str | None:
    # request.getHeader(b"Authorization"), read from the header dict (canonical names,
    # the last value) without Twisted's three calls per request.
    values = request.requestHeaders._rawHeaders.get(b"Authorization")
    raw_header = values[-1] if values else None
    if raw_header:
        # A client sends the same header on every request: its token is kept by the
        # header's bytes (the token authority holds the tokens in use anyway).
        known = _bearer_tokens.get(raw_header)
        if known is not None:
            return known
        header = raw_header.decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            if len(_bearer_tokens) >= _BEARER_KEPT:
                _bearer_tokens.clear()
            _bearer_tokens[raw_header] = token = token.strip()
            return token
        raise MatrixError(401, "M_MISSING_TOKEN", "Authorization header is not a Bearer token")
    values = request.args.get(b"access_token")
    if values:
        return values[0].decode("utf-8", "replace")
    return None


def answer_taken(request: server.Request, rid: str, start: float, user: str, status: int,
                 body: JsonDict | RawJson, headers: dict[str, str] | None = None) -> None:
    """The end of every request, `_handle`'s and a fast handler's (FastHandler): the answer
    (write_json does nothing if the client has gone) and its log line."""
    if getattr(request, "too_large", False):
        headers = {**(headers or {}), "Connection": "close"}
    write_json(request, status, body, headers or {}, CORS_HEADERS)
    if logger.isEnabledFor(logging.INFO):  # the arguments cost a regex per request
        logger.info("%s %s %s %d %.1fms %s", rid, request.method.decode("ascii", "replace"),
                    _clean(request), status, (time.monotonic() - start) * 1000, user)


def cancelled_taken(request: server.Request) -> None:
    """`_handle`'s line for a client gone before its answer, for a request a fast handler
    took and no coroutine waits for."""
    logger.info("%s %s cancelled: client went away",
                request.method.decode("ascii", "replace"), _clean(request))


def continue_taken(request: server.Request, rid: str, start: float, user: str,
                   work: Awaitable[JsonDict | RawJson]) -> Task:
    """Run `work`, the rest of a request a fast handler took, as `_handle` runs a handler:
    its body answered, a MatrixError as its error, anything else a 500, cancelling (the
    returned Task's `cancel`, when the client goes) logged. The request's own context
    variables, as `_handle` sets them."""
    return Task(_finish_taken(request, rid, start, user, work), log_unhandled)


async def _finish_taken(request: server.Request, rid: str, start: float, user: str,
                        work: Awaitable[JsonDict | RawJson]) -> None:
    request_id.set(rid)
    method = request.method.decode("ascii", "replace")
    headers: dict[str, str] = {}
    try:
        status, body = 200, await work
    except MatrixError as e:
        status, body, headers = e.status, e.to_json(), e.headers
    except defer.CancelledError:
        logger.info("%s %s cancelled: client went away", method, _clean(request))
        return
    except Exception:
        logger.exception("%s %s failed", method, _clean(request))
        status, body = 500, {"errcode": "M_UNKNOWN", "error": "Internal server error"}
    answer_taken(request, rid, start, user, status, body, headers)


def _client_ip(request: server.Request) -> str:
    peer = request.getClientAddress()
    return getattr(peer, "host", None) or "unknown"


def _clean(request: server.Request) -> str:
    """The request path and query, with any access token blanked."""
    uri = request.uri.decode("utf-8", "replace")
    return _TOKEN_IN_QUERY.sub(r"\1<redacted>", uri)


def log_unhandled(failure: Failure) -> None:
    """What escaped a request's handler (a Task's `on_error`)."""
    if not failure.check(defer.CancelledError):
        logger.error("unhandled error in request: %s", failure.getTraceback())


def path_quote(value: str) -> str:
    return quote(value, safe="")
