"""The inbound federation listener: routing, X-Matrix checks, JSON errors, TLS.

Every `/_matrix/federation/*` route is authenticated unless registered with
`auth=False` (only `/version` is, as the spec allows): the X-Matrix header is
verified through the key ring before the handler runs, and the handler gets
the authenticated origin. A missing, malformed or wrong signature, or a
destination other than this server, is 401 M_UNAUTHORIZED. The key endpoints
(`/_matrix/key/v2/*`) are unauthenticated by definition.

This is a resource of its own rather than the client API's JSON base because
what it authenticates is a server, not a user's token; what the two share
(errors, routing, bodies, answers) is roost.http's.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, ssl
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from roost.federation.transport.xmatrix import XMatrixError, verify_request
from roost.http.bodies import Answered, QueryArgs, json_object, parse_json, write_json
from roost.http.errors import MatrixError
from roost.http.limits import LimitedSite
from roost.http.routing import RouteTable, compile_template
from roost.keys.remote import KeyRing

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
_counter = itertools.count(1)
# A transaction holds at most 50 PDUs of at most 64 KiB and 100 EDUs, so a
# body beyond this is not a Matrix request.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass
class FederationRequest(QueryArgs):
    """What a handler needs of an inbound request, parsed once."""

    http: server.Request
    method: str
    path: str
    params: dict[str, str]
    origin: str | None  # the authenticated server; None on unauthenticated routes
    content: Any  # the parsed JSON body, or None when there was none

    @property
    def authenticated_origin(self) -> str:
        if self.origin is None:
            raise MatrixError(401, "M_UNAUTHORIZED", "request not authenticated")
        return self.origin

    def json(self) -> JsonDict:
        """The body as a JSON object, or M_BAD_JSON / M_NOT_JSON."""
        return json_object(self.content)


# JSON to write, or ANSWERED when the handler wrote the answer itself (media).
Handler = Callable[[FederationRequest], Awaitable[JsonDict | tuple[int, JsonDict] | Answered]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool


# (room id, origin) -> whether the room's server ACL lets the origin in.
RoomGuard = Callable[[str, str], Awaitable[bool]]


class FederationRouter(RouteTable[Route]):
    """The federation routes; each federation module registers its own.

    `room_guard`, when set (by federation.served, from the access module), is
    the server-ACL check the listener runs before every authenticated request
    whose path names a room.
    """

    room_guard: RoomGuard | None = None

    def add(self, method: str, path: str, handler: Handler, *, auth: bool = True) -> None:
        """`path` is a template as roost.http.routing takes it."""
        self.insert(path, Route(method, compile_template(path), handler, auth))


def server_version() -> str:
    try:
        return importlib.metadata.version("roost")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def register_version(router: FederationRouter, version: str | None = None) -> None:
    """`GET /_matrix/federation/v1/version`, unauthenticated as the spec allows."""
    body = {"server": {"name": "Roost", "version": version or server_version()}}

    async def handle(_req: FederationRequest) -> JsonDict:
        return body

    router.add("GET", "/_matrix/federation/v1/version", handle, auth=False)


class FederationResource(Resource):
    """A leaf resource answering every path through a `FederationRouter`."""

    isLeaf = True

    def __init__(
        self,
        router: FederationRouter,
        keyring: KeyRing,
        server_name: str,
        on_authenticated: Callable[[str], None] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        """`on_authenticated(origin)` runs after each verified request (wiring uses it to
        clear the outbound backoff for a server that has evidently come back)."""
        super().__init__()
        self._router = router
        self._keyring = keyring
        self._server_name = server_name
        self._on_authenticated = on_authenticated
        self._max_body = max_body_bytes
        self.max_body_bytes = max_body_bytes  # read by FederationSite.body_limit

    def render(self, request: server.Request) -> int:
        d = defer.ensureDeferred(self._handle(request))
        request.notifyFinish().addErrback(lambda _f: d.cancel())
        d.addErrback(_log_unhandled)
        return server.NOT_DONE_YET

    async def _handle(self, request: server.Request) -> None:
        rid = f"fed{next(_counter)}"
        start = time.monotonic()
        method = request.method.decode("ascii", "replace")
        uri = request.uri.decode("utf-8", "replace")
        origin = None
        try:
            route, params = self._route(request, method)
            content = self._content(request)
            if route.auth:
                origin = await self._authenticate(request, method, uri, content)
                await self._check_acl(params, origin)
            req = FederationRequest(request, method, request.path.decode("utf-8", "replace"),
                                    params, origin, content)
            result = await route.handler(req)
            if isinstance(result, Answered):
                logger.info("%s %s %s %d %.1fms %s", rid, method, uri, request.code,
                            (time.monotonic() - start) * 1000, origin or "-")
                return
            status, body = result if isinstance(result, tuple) else (200, result)
        except MatrixError as e:
            status, body = e.status, e.to_json()
        except defer.CancelledError:
            logger.info("%s %s %s cancelled: peer went away", rid, method, uri)
            return
        except Exception:
            logger.exception("%s %s %s failed", rid, method, uri)
            status, body = 500, {"errcode": "M_UNKNOWN", "error": "Internal server error"}
        write_json(request, status, body)
        logger.info("%s %s %s %d %.1fms %s", rid, method, uri, status,
                    (time.monotonic() - start) * 1000, origin or "-")

    def _route(self, request: server.Request, method: str) -> tuple[Route, dict[str, str]]:
        path = request.path.decode("utf-8", "replace")
        route, params, known = self._router.match(method, path)
        if route is None:
            raise MatrixError(405 if known else 404, "M_UNRECOGNIZED", "Unrecognized request")
        return route, params

    async def _check_acl(self, params: dict[str, str], origin: str) -> None:
        """Spec: a server the room's ACL denies gets 403 M_FORBIDDEN on every request
        that concerns the room (PDUs and EDUs are checked room by room in /send)."""
        room_id = params.get("roomId", params.get("room_id"))
        guard = self._router.room_guard
        if room_id is not None and guard is not None and not await guard(room_id, origin):
            raise MatrixError(403, "M_FORBIDDEN", "Server is banned from this room by its ACL")

    def _content(self, request: server.Request) -> Any:
        length = request.getHeader(b"Content-Length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            raise MatrixError(413, "M_TOO_LARGE", "Request body too large")
        raw = request.content.read(self._max_body + 1) if request.content is not None else b""
        if len(raw) > self._max_body:
            raise MatrixError(413, "M_TOO_LARGE", "Request body too large")
        return parse_json(raw) if raw.strip() else None

    async def _authenticate(self, request: server.Request, method: str, uri: str, content: Any) -> str:
        headers = [h.decode("latin-1") for h in request.requestHeaders.getRawHeaders(b"Authorization", [])]
        try:
            origin = await verify_request(self._keyring, headers, method, uri, self._server_name, content)
        except XMatrixError as e:
            raise MatrixError(401, "M_UNAUTHORIZED", str(e)) from None
        if self._on_authenticated is not None:
            self._on_authenticated(origin)
        return origin


def _log_unhandled(failure: Failure) -> None:
    if not failure.check(defer.CancelledError):
        logger.error("unhandled error in federation request: %s", failure.getTraceback())


class FederationSite(LimitedSite):
    """A Site whose access log is the resource's own line (with the origin), and whose
    bodies are limited as the resource says (413 early, never a reset: roost.http.limits)."""

    def body_limit(self, path: bytes) -> int:
        return getattr(self.resource, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)

    def log(self, request: server.Request) -> None:
        pass


def federation_site(resource: FederationResource) -> FederationSite:
    site = FederationSite(resource)
    site.noisy = False
    return site


def tls_context_factory(cert_path: str, key_path: str) -> ssl.CertificateOptions:
    """Server TLS options from PEM files: the first certificate is the leaf, the rest its chain."""
    with open(cert_path, "rb") as f:
        pem = f.read()
    with open(key_path, "rb") as f:
        key_pem = f.read()
    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)
    if not blocks:
        raise ValueError(f"no certificate in {cert_path}")
    leaf = ssl.PrivateCertificate.loadPEM(blocks[0] + b"\n" + key_pem)
    chain = [ssl.Certificate.loadPEM(b).original for b in blocks[1:]]
    return ssl.CertificateOptions(
        privateKey=leaf.privateKey.original,
        certificate=leaf.original,
        extraCertChain=chain,
    )
