"""The inbound federation listener: routing, X-Matrix checks, JSON errors, TLS.

Every `/_matrix/federation/*` route is authenticated unless registered with
`auth=False` (only `/version` is, as the spec allows): the X-Matrix header is
verified through the key ring before the handler runs, and the handler gets
the authenticated origin. A missing, malformed or wrong signature, or a
destination other than this server, is 401 M_UNAUTHORIZED. The key endpoints
(`/_matrix/key/v2/*`) are unauthenticated by definition.

This is a separate, small resource rather than the client API's JSON base
because `federation` may not import `client_api` (tests/test_layers.py), and
because what it authenticates is a server, not a user's token.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from twisted.internet import defer, ssl
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from roost.federation.transport.xmatrix import XMatrixError, verify_request
from roost.keys.remote import KeyRing

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
_counter = itertools.count(1)
# A transaction holds at most 50 PDUs of at most 64 KiB and 100 EDUs, so a
# body beyond this is not a Matrix request.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


class FederationError(Exception):
    """An error another server sees as `{"errcode": ..., "error": ...}` with `status`."""

    def __init__(self, status: int, errcode: str, error: str, **extra: Any) -> None:
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.extra = extra

    def to_json(self) -> JsonDict:
        return {"errcode": self.errcode, "error": self.error, **self.extra}


@dataclass
class FederationRequest:
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
            raise FederationError(401, "M_UNAUTHORIZED", "request not authenticated")
        return self.origin

    def json(self) -> JsonDict:
        """The body as a JSON object, or M_BAD_JSON / M_NOT_JSON."""
        if self.content is None:
            raise FederationError(400, "M_NOT_JSON", "Content not JSON.")
        if not isinstance(self.content, dict):
            raise FederationError(400, "M_BAD_JSON", "Content must be a JSON object.")
        return self.content

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.http.args.get(name.encode())
        return values[0].decode("utf-8", "replace") if values else default

    def args(self, name: str) -> list[str]:
        return [v.decode("utf-8", "replace") for v in self.http.args.get(name.encode(), [])]

    def int_arg(self, name: str, default: int | None = None) -> int | None:
        value = self.arg(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise FederationError(400, "M_INVALID_PARAM", f"{name} must be an integer") from None


Handler = Callable[[FederationRequest], Awaitable[JsonDict | tuple[int, JsonDict]]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool


class FederationRouter:
    """(method, path regex) -> handler; each federation module registers its routes."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str, handler: Handler, *, auth: bool = True) -> None:
        """`path` is a regex with `{name}` placeholders, each matching one path segment."""
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
        self.routes.append(Route(method, re.compile(f"^{regex}$"), handler, auth))

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, params, path_known); path_known tells 405 from 404."""
        known = False
        for route in self.routes:
            m = route.pattern.match(path)
            if m:
                known = True
                if route.method == method or (method == "HEAD" and route.method == "GET"):
                    return route, {k: unquote(v) for k, v in m.groupdict().items()}, True
        return None, {}, known


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
            req = FederationRequest(request, method, request.path.decode("utf-8", "replace"),
                                    params, origin, content)
            result = await route.handler(req)
            status, body = result if isinstance(result, tuple) else (200, result)
        except FederationError as e:
            status, body = e.status, e.to_json()
        except defer.CancelledError:
            logger.info("%s %s %s cancelled: peer went away", rid, method, uri)
            return
        except Exception:
            logger.exception("%s %s %s failed", rid, method, uri)
            status, body = 500, {"errcode": "M_UNKNOWN", "error": "Internal server error"}
        _respond(request, status, body)
        logger.info("%s %s %s %d %.1fms %s", rid, method, uri, status,
                    (time.monotonic() - start) * 1000, origin or "-")

    def _route(self, request: server.Request, method: str) -> tuple[Route, dict[str, str]]:
        path = request.path.decode("utf-8", "replace")
        route, params, known = self._router.match(method, path)
        if route is None:
            raise FederationError(405 if known else 404, "M_UNRECOGNIZED", "Unrecognized request")
        return route, params

    def _content(self, request: server.Request) -> Any:
        length = request.getHeader(b"Content-Length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            raise FederationError(413, "M_TOO_LARGE", "Request body too large")
        raw = request.content.read(self._max_body + 1) if request.content is not None else b""
        if len(raw) > self._max_body:
            raise FederationError(413, "M_TOO_LARGE", "Request body too large")
        if not raw.strip():
            return None
        try:
            return json.loads(raw, parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError):
            raise FederationError(400, "M_NOT_JSON", "Content not JSON.") from None

    async def _authenticate(self, request: server.Request, method: str, uri: str, content: Any) -> str:
        headers = [h.decode("latin-1") for h in request.requestHeaders.getRawHeaders(b"Authorization", [])]
        try:
            origin = await verify_request(self._keyring, headers, method, uri, self._server_name, content)
        except XMatrixError as e:
            raise FederationError(401, "M_UNAUTHORIZED", str(e)) from None
        if self._on_authenticated is not None:
            self._on_authenticated(origin)
        return origin


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _respond(request: server.Request, status: int, body: JsonDict) -> None:
    if request.finished or request._disconnected:
        return
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", str(len(payload)).encode())
    if request.method != b"HEAD":
        request.write(payload)
    request.finish()


def _log_unhandled(failure: Failure) -> None:
    if not failure.check(defer.CancelledError):
        logger.error("unhandled error in federation request: %s", failure.getTraceback())


class FederationSite(server.Site):
    """A Site whose access log is the resource's own line (with the origin)."""

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
