"""Server discovery: where to connect for a server name, and what to call it there.

The steps are the spec's ("Resolving server names"): an IP literal or an
explicit port connects directly; otherwise `/.well-known/matrix/server` may
delegate, then SRV `_matrix-fed._tcp`, then the deprecated `_matrix._tcp`,
then port 8448. The result is a `Route`: the Host header to send, the name
the TLS certificate must be valid for, and the addresses to try in order.

Well-known answers are cached as their Cache-Control or Expires headers say,
within bounds: 24 hours when they say nothing, never more than 48 hours (the
spec's figures), and never less than 5 minutes, so that a server answering
`no-cache` does not cost a lookup per request. Failures are cached for an
hour when the answer was definite (a 404, bad JSON) and for 2 minutes when it
was a network failure or a 5xx, which may pass soon. The network and DNS are
injected (`WellKnownFetcher`, `SrvResolver`), so tests need no real DNS.
"""

from __future__ import annotations

import calendar
import email.utils
import ipaddress
import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8448
WELL_KNOWN_DEFAULT_MS = 24 * 3_600_000
WELL_KNOWN_MAX_MS = 48 * 3_600_000
WELL_KNOWN_MIN_MS = 5 * 60_000
WELL_KNOWN_DEFINITE_FAILURE_MS = 3_600_000
WELL_KNOWN_TRANSIENT_FAILURE_MS = 2 * 60_000
WELL_KNOWN_MAX_BYTES = 50 * 1024
WELL_KNOWN_TIMEOUT_S = 10.0

_HOST_RE = re.compile(r"^[0-9A-Za-z.-]{1,255}$")


@dataclass(frozen=True)
class ServerName:
    """A parsed server name: `host` has no brackets; `port` is None when not given."""

    host: str
    port: int | None
    is_ip: bool

    def header_host(self) -> str:
        """The host as it appears in a URL or Host header (IPv6 in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def with_port(self) -> str:
        return self.header_host() + (f":{self.port}" if self.port is not None else "")


def parse_server_name(name: str) -> ServerName:
    """Split `host[:port]` per the spec's grammar; ValueError if it is not a server name."""
    if name.startswith("["):
        end = name.find("]")
        if end < 0:
            raise ValueError(f"bad server name {name!r}")
        host, rest = name[1:end], name[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad IPv6 literal in {name!r}") from None
        is_ip = True
    else:
        host, sep, port_text = name.partition(":")
        rest = sep + port_text
        if not _HOST_RE.match(host):
            raise ValueError(f"bad server name {name!r}")
        is_ip = _is_ipv4(host)
    port = None
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit() or not 0 < int(rest[1:]) < 65536:
            raise ValueError(f"bad port in server name {name!r}")
        port = int(rest[1:])
    return ServerName(host, port, is_ip)


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class Target:
    host: str  # a hostname to resolve, or an IP literal (no brackets)
    port: int


@dataclass(frozen=True)
class Route:
    """How to reach a server: the Host header, the certificate's name, where to connect."""

    host_header: str
    tls_name: str
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class SrvRecord:
    priority: int
    weight: int
    target: str
    port: int


class SrvResolver(Protocol):
    async def lookup_srv(self, name: str) -> list[SrvRecord]:
        """The SRV records for `name` (empty if none)."""
        ...


class TwistedSrvResolver:
    """SRV lookups through `twisted.names` (which caches by TTL)."""

    def __init__(self, resolver: Any = None) -> None:
        # Made on first use: twisted.names' resolver schedules periodic re-reads
        # of resolv.conf as soon as it exists, which a server that never federates
        # (and every test) should not carry.
        self._resolver = resolver

    async def lookup_srv(self, name: str) -> list[SrvRecord]:
        from twisted.names import client, dns, error

        if self._resolver is None:
            self._resolver = client.createResolver()
        try:
            answers, _auth, _add = await self._resolver.lookupService(name)
        except (error.DNSNameError, error.DNSNotImplementedError, error.DNSServerError,
                defer.TimeoutError, error.DNSQueryTimeoutError):
            return []
        records = []
        for answer in answers:
            if answer.type == dns.SRV and answer.payload:
                p = answer.payload
                target = p.target.name.decode("ascii")
                if target and target != ".":  # "." means the service is not offered
                    records.append(SrvRecord(p.priority, p.weight, target, p.port))
        return records


@dataclass(frozen=True)
class WellKnownResult:
    """`m.server` from a well-known answer (None when there was none), and how long it holds."""

    server: str | None
    cache_ms: int


class WellKnownFetcher(Protocol):
    async def fetch(self, hostname: str) -> WellKnownResult: ...


class HttpWellKnownFetcher:
    """GET `https://<hostname>/.well-known/matrix/server` through the given agent.

    The agent is the client's TLS- and blocklist-checking one (or a fake in
    tests); redirects are followed by treq, which stops after 20.
    """

    def __init__(self, agent: IAgent, clock: IReactorTime) -> None:
        self._agent = agent
        self._http: Any = None
        self._clock = clock

    async def fetch(self, hostname: str) -> WellKnownResult:
        url = f"https://{hostname}/.well-known/matrix/server"
        import treq  # here, not at start: treq (1.7 MiB) only for servers that use it

        if self._http is None:
            self._http = treq.client.HTTPClient(self._agent)
        try:
            d = self._http.get(url, allow_redirects=True)
            d.addTimeout(WELL_KNOWN_TIMEOUT_S, self._clock)
            response = await d
            body_d = treq.content(response)
            body_d.addTimeout(WELL_KNOWN_TIMEOUT_S, self._clock)
            body = await body_d
        except Exception as e:
            logger.info("well-known of %s: %s", hostname, e)
            return WellKnownResult(None, WELL_KNOWN_TRANSIENT_FAILURE_MS)
        if response.code >= 500:
            return WellKnownResult(None, WELL_KNOWN_TRANSIENT_FAILURE_MS)
        if response.code != 200:
            return WellKnownResult(None, WELL_KNOWN_DEFINITE_FAILURE_MS)
        server = parse_well_known(body)
        if server is None:
            return WellKnownResult(None, WELL_KNOWN_DEFINITE_FAILURE_MS)
        return WellKnownResult(server, cache_period_ms(response.headers, self._now_ms()))

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)


def parse_well_known(body: bytes) -> str | None:
    """`m.server` from a well-known body, if it is there and a valid server name."""
    if len(body) > WELL_KNOWN_MAX_BYTES:
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    server = parsed.get("m.server") if isinstance(parsed, dict) else None
    if not isinstance(server, str):
        return None
    try:
        parse_server_name(server)
    except ValueError:
        return None
    return server


def cache_period_ms(headers: Headers, now_ms: int) -> int:
    """How long to keep a well-known answer, from Cache-Control or Expires, within bounds."""
    period: int | None = None
    for value in headers.getRawHeaders(b"Cache-Control", []):
        for directive in value.decode("latin-1").split(","):
            name, _, arg = directive.strip().partition("=")
            name = name.lower()
            if name in ("no-store", "no-cache"):
                period = 0
            elif name == "max-age" and arg.strip().isdigit() and period is None:
                period = int(arg.strip()) * 1000
    if period is None:
        expires = headers.getRawHeaders(b"Expires", [])
        if expires:
            parsed = email.utils.parsedate(expires[0].decode("latin-1"))
            period = calendar.timegm(parsed) * 1000 - now_ms if parsed else 0
    if period is None:
        period = WELL_KNOWN_DEFAULT_MS
    return max(WELL_KNOWN_MIN_MS, min(period, WELL_KNOWN_MAX_MS))


class ServerDiscovery:
    """Turns a server name into a `Route`, caching well-known answers."""

    def __init__(self, clock: IReactorTime, well_known: WellKnownFetcher, srv: SrvResolver,
                 cache_size: int = 10_000) -> None:
        self._clock = clock
        self._well_known = well_known
        self._srv = srv
        self._cache: OrderedDict[str, tuple[int, str | None]] = OrderedDict()
        self._cache_size = cache_size
        self._locks: dict[str, defer.DeferredLock] = {}

    async def resolve(self, server_name: str) -> Route:
        name = parse_server_name(server_name)
        if name.is_ip:
            return Route(name.with_port(), name.host, (Target(name.host, name.port or DEFAULT_PORT),))
        if name.port is not None:
            return Route(server_name, name.host, (Target(name.host, name.port),))
        delegated = await self._delegation(name.host)
        if delegated is not None:
            return await self._resolve_delegated(parse_server_name(delegated))
        return await self._by_srv(name.host)

    async def _resolve_delegated(self, d: ServerName) -> Route:
        if d.is_ip:
            return Route(d.with_port(), d.host, (Target(d.host, d.port or DEFAULT_PORT),))
        if d.port is not None:
            return Route(d.with_port(), d.host, (Target(d.host, d.port),))
        return await self._by_srv(d.host)

    async def _by_srv(self, host: str) -> Route:
        """SRV `_matrix-fed._tcp`, then the deprecated `_matrix._tcp`, then port 8448."""
        for service in ("_matrix-fed._tcp", "_matrix._tcp"):
            records = await self._srv.lookup_srv(f"{service}.{host}")
            if records:
                ordered = sorted(records, key=lambda r: (r.priority, -r.weight))
                return Route(host, host, tuple(Target(r.target.rstrip("."), r.port) for r in ordered))
        return Route(host, host, (Target(host, DEFAULT_PORT),))

    async def _delegation(self, host: str) -> str | None:
        cached = self._cached(host)
        if cached is not None:
            return cached[1]
        lock = self._locks.setdefault(host, defer.DeferredLock())
        await lock.acquire()
        try:
            cached = self._cached(host)
            if cached is not None:
                return cached[1]
            result = await self._well_known.fetch(host)
            self._cache[host] = (self._now_ms() + result.cache_ms, result.server)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return result.server
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(host, None)

    def _cached(self, host: str) -> tuple[int, str | None] | None:
        entry = self._cache.get(host)
        if entry is None or entry[0] <= self._now_ms():
            return None
        self._cache.move_to_end(host)
        return entry

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)
