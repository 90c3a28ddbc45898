"""The outbound federation client: discovery, TLS, the IP blocklist, signing, backoff.

Requests go to `matrix-federation://<destination><path>`; the agent here
resolves the destination (`discovery.py`), sends the Host header discovery
chose, and connects only to addresses outside the blocklist, over TLS checked
against the name discovery chose. Connections are pooled per destination.
Each request is signed with X-Matrix (key endpoints excepted, which need no
signature), bounded by a timeout, and its response by a size limit.

A destination that fails (no connection, TLS failure, timeout, 5xx) is not
tried again until its backoff passes: the interval starts at
`min_retry_interval`, doubles on each further failure up to
`max_retry_interval`, and a destination is never given up on for good. Any
answer below 500 (even a 404) shows the server is up and clears it, as does
an authenticated request from that server (`reset_backoff`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from io import BytesIO
from typing import Any
from urllib.parse import urlencode

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IHostnameResolver,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory
from zope.interface import implementer

from roost.federation.transport.discovery import (
    HttpWellKnownFetcher,
    Route,
    ServerDiscovery,
    SrvResolver,
    Target,
    TwistedSrvResolver,
    parse_server_name,
)
from roost.federation.transport.tls import TlsPolicy, is_ip
from roost.federation.transport.xmatrix import sign_request
from roost.http.outbound import AddressCollector, IpBlocklist
from roost.keys.local import LocalKey

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
SCHEME = b"matrix-federation"
DEFAULT_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 15.0
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class FederationClientError(Exception):
    """Any failure of an outbound federation request."""


class HttpResponseError(FederationClientError):
    """The destination answered with an error status (and perhaps a Matrix errcode)."""

    def __init__(self, destination: str, status: int, errcode: str | None, error: str,
                 body: Any = None) -> None:
        super().__init__(f"{destination}: {status} {errcode or ''} {error}".rstrip())
        self.destination = destination
        self.status = status
        self.errcode = errcode
        self.error = error
        self.body = body


class RequestFailedError(FederationClientError):
    """No usable answer: no connection, TLS failure, timeout, or a body that is not JSON."""


class BlockedAddressError(RequestFailedError):
    """Every address of the destination is in the IP range blocklist."""


class NotRetryingDestinationError(FederationClientError):
    """The destination failed recently and its backoff has not passed."""

    def __init__(self, destination: str, retry_at_ms: int) -> None:
        super().__init__(f"not retrying {destination} until {retry_at_ms}")
        self.destination = destination
        self.retry_at_ms = retry_at_ms


class Connector:
    """Opens TLS connections to a route's targets, refusing blocklisted addresses.

    Names are resolved here (not inside the endpoint) so that the blocklist
    sees every address before any connection is attempted.
    """

    def __init__(self, reactor: Any, name_resolver: IHostnameResolver, blocklist: IpBlocklist,
                 tls: TlsPolicy) -> None:
        self._reactor = reactor
        self._resolver = name_resolver
        self._blocklist = blocklist
        self._tls = tls

    async def addresses(self, host: str) -> list[str]:
        if is_ip(host):
            found = [host]
        else:
            receiver = AddressCollector()
            self._resolver.resolveHostName(receiver, host, 0)
            found = await receiver.done
        allowed = [a for a in found if not self._blocklist.blocks(a)]
        if found and not allowed:
            raise BlockedAddressError(f"every address of {host} is in the IP range blocklist")
        if not allowed:
            raise RequestFailedError(f"no address for {host}")
        return allowed

    async def connect(self, route: Route, factory: Any) -> Any:
        """Try each target's addresses in turn; the first connection made wins."""
        errors: list[Exception] = []
        for target in route.targets:
            try:
                addresses = await self.addresses(target.host)
            except RequestFailedError as e:
                errors.append(e)
                continue
            for address in addresses:
                try:
                    return await self._endpoint(address, target.port, route.tls_name).connect(factory)
                except Exception as e:
                    errors.append(e)
        if errors and all(isinstance(e, BlockedAddressError) for e in errors):
            raise errors[0]
        last = errors[-1] if errors else "no targets"
        raise RequestFailedError(f"could not connect to {route.host_header}: {last}")

    def _endpoint(self, address: str, port: int, tls_name: str) -> IStreamClientEndpoint:
        tcp_class = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        tcp = tcp_class(self._reactor, address, port, timeout=CONNECT_TIMEOUT_S)
        return wrapClientTLS(self._tls.creator(tls_name), tcp)


@implementer(IStreamClientEndpoint)
class _RoutedEndpoint:
    def __init__(self, connect: Any) -> None:
        self._connect = connect

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        return defer.ensureDeferred(self._connect(factory))


@implementer(IAgentEndpointFactory)
class _EndpointFactory:
    """Endpoints for `matrix-federation://` (via discovery) and plain `https://` URLs."""

    def __init__(self, discovery: ServerDiscovery | None, connector: Connector) -> None:
        self.discovery = discovery
        self._connector = connector

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        if uri.scheme == SCHEME and self.discovery is not None:
            discovery, destination = self.discovery, uri.netloc.decode("ascii")

            async def via_discovery(factory: Any) -> Any:
                return await self._connector.connect(await discovery.resolve(destination), factory)

            return _RoutedEndpoint(via_discovery)
        if uri.scheme == b"https":
            host = uri.host.decode("ascii").strip("[]")
            route = Route(host, host, (Target(host, uri.port),))
            return _RoutedEndpoint(lambda factory: self._connector.connect(route, factory))
        raise SchemeNotSupported(f"unsupported scheme {uri.scheme!r}")


class Backoff:
    """Per-destination retry intervals: doubling from min to max, cleared on success."""

    def __init__(self, clock: IReactorTime, min_ms: int, max_ms: int) -> None:
        self._clock = clock
        self._min = min_ms
        self._max = max(max_ms, min_ms)
        self._state: dict[str, tuple[int, int]] = {}  # destination -> (interval, retry_at)

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def retry_at(self, destination: str) -> int | None:
        """When `destination` may be tried again, if that is still in the future."""
        state = self._state.get(destination)
        if state is None or state[1] <= self._now_ms():
            return None
        return state[1]

    def failed(self, destination: str) -> None:
        previous = self._state.get(destination)
        interval = self._min if previous is None else min(previous[0] * 2, self._max)
        self._state[destination] = (interval, self._now_ms() + interval)

    def succeeded(self, destination: str) -> None:
        self._state.pop(destination, None)


class FederationClient:
    """Signed JSON requests to other servers, with the behaviour the module docstring gives."""

    def __init__(
        self,
        reactor: Any,
        local_key: LocalKey,
        discovery: ServerDiscovery,
        connector: Connector,
        backoff: Backoff,
        *,
        clock: IReactorTime | None = None,
        pool: HTTPConnectionPool | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._clock = clock or reactor
        self._local = local_key
        self._discovery = discovery
        self.backoff = backoff
        self.pool = pool or HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 5
        self._agent: IAgent = Agent.usingEndpointFactory(
            reactor, _EndpointFactory(discovery, connector), self.pool
        )
        self._timeout_s = timeout_s
        self._max_response = max_response_bytes
        self._in_flight: set[defer.Deferred[Any]] = set()
        self._closed = False

    async def close(self) -> None:
        """Cancel the requests in flight, then close the pooled connections.

        Closing only the pool would leave the connections of requests still
        running: each would be put back in the pool when its answer came,
        after the pool was emptied, and outlive the server."""
        self._closed = True
        for d in list(self._in_flight):
            d.cancel()
        await self.pool.closeCachedConnections()

    def _track(self, d: defer.Deferred[Any], timeout_s: float | None) -> defer.Deferred[Any]:
        """Bound `d` by the timeout and keep it cancellable by `close`."""
        if self._closed:
            d.cancel()
        d.addTimeout(timeout_s or self._timeout_s, self._clock)
        self._in_flight.add(d)
        d.addBoth(self._done, d)
        return d

    def _done(self, result: Any, d: defer.Deferred[Any]) -> Any:
        self._in_flight.discard(d)
        return result

    async def get_json(self, destination: str, path: str, args: Mapping[str, Any] | None = None,
                       **options: Any) -> Any:
        return await self.request("GET", destination, path, args, None, **options)

    async def post_json(self, destination: str, path: str, body: Any,
                        args: Mapping[str, Any] | None = None, **options: Any) -> Any:
        return await self.request("POST", destination, path, args, body, **options)

    async def put_json(self, destination: str, path: str, body: Any,
                       args: Mapping[str, Any] | None = None, **options: Any) -> Any:
        return await self.request("PUT", destination, path, args, body, **options)

    def reset_backoff(self, destination: str) -> None:
        """The destination is evidently up (it just sent us an authenticated request)."""
        self.backoff.succeeded(destination)

    async def request(
        self,
        method: str,
        destination: str,
        path: str,
        args: Mapping[str, Any] | None,
        body: Any,
        *,
        sign: bool = True,
        ignore_backoff: bool = False,
        timeout_s: float | None = None,
    ) -> Any:
        """One request; the parsed JSON answer, or a FederationClientError.

        `path` must already be percent-encoded; `args` values may be lists.
        """
        try:
            parse_server_name(destination)
        except ValueError as e:
            raise RequestFailedError(str(e)) from None
        retry_at = None if ignore_backoff else self.backoff.retry_at(destination)
        if retry_at is not None:
            raise NotRetryingDestinationError(destination, retry_at)
        uri = path + ("?" + urlencode(args, doseq=True) if args else "")
        headers = Headers({b"User-Agent": [b"Roost"]})
        if sign:
            auth = sign_request(self._local, method, uri, destination, body)
            headers.addRawHeader(b"Authorization", auth.encode("latin-1"))
        data = None
        if body is not None:
            headers.addRawHeader(b"Content-Type", b"application/json")
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            status, raw = await self._exchange(method, destination, uri, headers, data, timeout_s)
        except BlockedAddressError:
            raise
        except Exception as e:
            self.backoff.failed(destination)
            if isinstance(e, FederationClientError):
                raise
            raise RequestFailedError(f"{method} {destination}{path}: {e!r}") from e
        if status >= 500:
            self.backoff.failed(destination)
        else:
            self.backoff.succeeded(destination)
        return _json_answer(destination, status, raw)

    async def download(self, destination: str, path: str, args: Mapping[str, Any] | None,
                       sink: Any, max_bytes: int, *, timeout_s: float | None = None
                       ) -> tuple[int, Headers]:
        """A signed GET whose body is streamed into the file `sink` (media); the status
        and headers. Error statuses raise HttpResponseError as `request` does; a body
        over `max_bytes` raises ResponseTooLargeError."""
        try:
            parse_server_name(destination)
        except ValueError as e:
            raise RequestFailedError(str(e)) from None
        retry_at = self.backoff.retry_at(destination)
        if retry_at is not None:
            raise NotRetryingDestinationError(destination, retry_at)
        uri = path + ("?" + urlencode(args, doseq=True) if args else "")
        headers = Headers({b"User-Agent": [b"Roost"]})
        headers.addRawHeader(b"Authorization",
                             sign_request(self._local, "GET", uri, destination, None)
                             .encode("latin-1"))

        async def exchange() -> tuple[int, Headers]:
            route = await self._discovery.resolve(destination)
            headers.setRawHeaders(b"Host", [route.host_header.encode("ascii")])
            url = f"matrix-federation://{destination}{uri}".encode("ascii")
            response = await self._agent.request(b"GET", url, headers, None)
            return await self._stream(response, destination, sink, max_bytes)

        d = self._track(defer.ensureDeferred(exchange()), timeout_s)
        try:
            status, answer_headers = await d
        except (BlockedAddressError, ResponseTooLargeError):
            raise
        except HttpResponseError as e:  # it answered: up, unless it answered 5xx
            if e.status >= 500:
                self.backoff.failed(destination)
            else:
                self.backoff.succeeded(destination)
            raise
        except Exception as e:
            self.backoff.failed(destination)
            if isinstance(e, FederationClientError):
                raise
            raise RequestFailedError(f"GET {destination}{path}: {e!r}") from e
        if status >= 500:
            self.backoff.failed(destination)
        else:
            self.backoff.succeeded(destination)
        return status, answer_headers

    async def download_url(self, url: str, sink: Any, max_bytes: int,
                           timeout_s: float | None = None) -> tuple[int, Headers]:
        """An unsigned GET of an https URL (where a federation media answer's `Location`
        points), through the same blocklist, streamed into `sink`."""
        if not url.startswith("https://"):
            raise RequestFailedError(f"only https URLs are fetched: {url[:100]!r}")
        headers = Headers({b"User-Agent": [b"Roost"]})

        async def exchange() -> tuple[int, Headers]:
            response = await self._agent.request(b"GET", url.encode("ascii"), headers, None)
            return await self._stream(response, url, sink, max_bytes)

        d = self._track(defer.ensureDeferred(exchange()), timeout_s)
        try:
            return await d
        except FederationClientError:
            raise
        except Exception as e:
            raise RequestFailedError(f"GET {url[:100]}: {e!r}") from e

    async def _stream(self, response: Any, what: str, sink: Any, max_bytes: int
                      ) -> tuple[int, Headers]:
        if not 200 <= response.code < 300:
            status, raw = await self._read(response, what)
            _json_answer(what, status, raw)  # raises HttpResponseError
        import treq  # here, not at start: treq (1.7 MiB) only for servers that use it

        await treq.collect(response, _ToSink(sink, max_bytes, what))
        return response.code, response.headers

    async def _exchange(self, method: str, destination: str, uri: str, headers: Headers,
                        data: bytes | None, timeout_s: float | None) -> tuple[int, bytes]:
        """Discovery, connection, request and body, all under one timeout."""
        d = self._track(defer.ensureDeferred(self._send(method, destination, uri, headers, data)),
                        timeout_s)
        return await d

    async def _send(self, method: str, destination: str, uri: str, headers: Headers,
                    data: bytes | None) -> tuple[int, bytes]:
        # The Host header is discovery's choice (the delegated name, say), not
        # the destination; the endpoint resolves the same route from the cache.
        route = await self._discovery.resolve(destination)
        headers.setRawHeaders(b"Host", [route.host_header.encode("ascii")])
        url = f"matrix-federation://{destination}{uri}".encode("ascii")
        producer = FileBodyProducer(BytesIO(data)) if data is not None else None
        response = await self._agent.request(method.encode("ascii"), url, headers, producer)
        return await self._read(response, destination)

    def _read(self, response: Any, destination: str) -> defer.Deferred[tuple[int, bytes]]:
        import treq  # here, not at start: treq (1.7 MiB) only for servers that use it

        chunks: list[bytes] = []
        size = [0]

        def collect(chunk: bytes) -> None:
            size[0] += len(chunk)
            if size[0] > self._max_response:  # treq drops the connection when this raises
                raise RequestFailedError(f"{destination}: response larger than {self._max_response}")
            chunks.append(chunk)

        d = treq.collect(response, collect)
        d.addCallback(lambda _: (response.code, b"".join(chunks)))
        return d


class _ToSink:
    """Writes a response body into a file, refusing more than `limit` bytes."""

    def __init__(self, sink: Any, limit: int, what: str) -> None:
        self._sink = sink
        self._limit = limit
        self._what = what
        self.size = 0

    def __call__(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._limit:  # treq drops the connection when this raises
            raise ResponseTooLargeError(f"{self._what}: response larger than {self._limit}")
        self._sink.write(chunk)


class ResponseTooLargeError(RequestFailedError):
    """A streamed body passed its size limit."""


def _json_answer(destination: str, status: int, raw: bytes) -> Any:
    try:
        parsed = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if 200 <= status < 300:
        if parsed is None and raw.strip() != b"null":
            raise RequestFailedError(f"{destination}: answer is not JSON")
        return parsed
    errcode = parsed.get("errcode") if isinstance(parsed, dict) else None
    error = parsed.get("error", "") if isinstance(parsed, dict) else raw[:200].decode("utf-8", "replace")
    raise HttpResponseError(destination, status, errcode if isinstance(errcode, str) else None,
                            str(error), parsed)


def build_federation_client(
    reactor: Any,
    local_key: LocalKey,
    *,
    verify_certificates: bool,
    ca_file: str | None,
    ip_range_blocklist: Sequence[str],
    min_retry_interval_ms: int,
    max_retry_interval_ms: int,
    clock: IReactorTime | None = None,
    name_resolver: IHostnameResolver | None = None,
    srv_resolver: SrvResolver | None = None,
    well_known_agent: IAgent | None = None,
) -> FederationClient:
    """Assemble the client from configuration; the injected parts default to the real ones."""
    clock = clock or reactor
    tls = TlsPolicy(verify_certificates, ca_file)
    connector = Connector(reactor, name_resolver or reactor.nameResolver,
                          IpBlocklist(ip_range_blocklist), tls)
    pool = HTTPConnectionPool(reactor, persistent=True)
    if well_known_agent is None:
        well_known_agent = Agent.usingEndpointFactory(reactor, _EndpointFactory(None, connector), pool)
    discovery = ServerDiscovery(clock, HttpWellKnownFetcher(well_known_agent, clock),
                                srv_resolver or TwistedSrvResolver())
    backoff = Backoff(clock, min_retry_interval_ms, max_retry_interval_ms)
    return FederationClient(reactor, local_key, discovery, connector, backoff, clock=clock, pool=pool)


class FederationKeyFetcher:
    """The key ring's `KeyFetcher`, over this client (handed to `keys` by wiring)."""

    def __init__(self, client: FederationClient) -> None:
        self._client = client

    async def fetch_server_keys(self, server_name: str) -> JsonDict:
        # Key endpoints are unauthenticated; a signature would only invite the
        # other server to fetch our keys in turn. The send backoff does not apply:
        # a server that was away and is back (and asking us something signed with
        # its key) must be verifiable at once, not when our retry timer ends. The
        # key ring keeps its own short memory of servers that had no keys.
        body = await self._client.get_json(server_name, "/_matrix/key/v2/server", sign=False,
                                           ignore_backoff=True)
        if not isinstance(body, dict):
            raise RequestFailedError(f"{server_name}: key response is not an object")
        return body

    async def query_notary(self, notary: str, server_keys: Mapping[str, Mapping[str, int]]
                           ) -> list[JsonDict]:
        criteria = {
            server: {key_id: {"minimum_valid_until_ts": ts} for key_id, ts in keys.items()}
            for server, keys in server_keys.items()
        }
        body = await self._client.post_json(notary, "/_matrix/key/v2/query",
                                            {"server_keys": criteria}, sign=False,
                                            ignore_backoff=True)
        answers = body.get("server_keys") if isinstance(body, dict) else None
        if not isinstance(answers, list):
            raise RequestFailedError(f"{notary}: notary answer has no server_keys list")
        return [a for a in answers if isinstance(a, dict)]
