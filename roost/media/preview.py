"""URL previews: fetch a page for a user and describe it (OpenGraph), safely.

A preview makes this server fetch any URL a user names, so every connection
goes through the outbound IP blocklist (the federation client's, handed in as
`blocks`, applied by `roost.http.outbound.checked_agent`): names are resolved
and each address is checked before a connection is made to that very
address, so neither a name pointing at a private address nor DNS answering
differently the second time gets through; redirects are followed by hand, at
most five, each hop checked the same way.
Bodies are limited in size and the whole fetch in time. HTML is read with the
standard library's parser (not regular expressions); an image found (or the
URL itself, when it is an image) is stored as local media and given as mxc://.
"""

from __future__ import annotations

import io
import tempfile
from html.parser import HTMLParser
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

from twisted.internet import defer, threads
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers

from roost.http.errors import MatrixError
from roost.http.outbound import BlockedAddressError, checked_agent
from roost.media.thumbnails import pillow

JsonDict = dict[str, Any]
_MAX_REDIRECTS = 5
_CACHE_ENTRIES = 1000
_CACHE_MS = 3_600_000


class MediaUploader(Protocol):
    async def upload(self, user_id: str, source: Any, content_type: str | None,
                     filename: str | None) -> str: ...


class UrlPreviewer:
    def __init__(self, reactor: Any, clock: Any, blocks: Any, uploader: MediaUploader,
                 max_bytes: int, timeout_ms: int, name_resolver: Any = None) -> None:
        self._clock = clock
        self._agent = checked_agent(reactor, blocks, HTTPConnectionPool(reactor, persistent=False),
                                    name_resolver)
        self._uploader = uploader
        self._max_bytes = max_bytes
        self._timeout_s = timeout_ms / 1000
        self._cache: dict[str, tuple[int, JsonDict]] = {}

    async def preview(self, url: str, user_id: str) -> JsonDict:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MatrixError(400, "M_INVALID_PARAM", "Only http and https URLs are previewed")
        now = int(self._clock.seconds() * 1000)
        cached = self._cache.get(url)
        if cached is not None and cached[0] > now:
            return cached[1]
        media_type, body, final_url = await self._fetch(url)
        if media_type.startswith("image/"):
            result = await self._image(body, media_type, user_id, final_url)
        elif media_type in ("text/html", "application/xhtml+xml"):
            result = await self._html(body, final_url, user_id)
        else:
            result = {}
        if len(self._cache) >= _CACHE_ENTRIES:
            self._cache.pop(next(iter(self._cache)))
        self._cache[url] = (now + _CACHE_MS, result)
        return result

    async def _fetch(self, url: str) -> tuple[str, bytes, str]:
        d = defer.ensureDeferred(self._fetch_following(url))
        d.addTimeout(self._timeout_s, self._clock)
        try:
            return await d
        except BlockedAddressError:
            raise MatrixError(403, "M_FORBIDDEN", "URL blocked by the IP range blocklist"
                              ) from None
        except MatrixError:
            raise
        except Exception as e:
            raise MatrixError(502, "M_UNKNOWN", f"Could not fetch the URL: {type(e).__name__}"
                              ) from None

    async def _fetch_following(self, url: str) -> tuple[str, bytes, str]:
        for _ in range(_MAX_REDIRECTS + 1):
            headers = Headers({b"User-Agent": [b"Roost URL preview"],
                               b"Accept-Language": [b"en"]})
            response = await self._agent.request(b"GET", url.encode("ascii", "strict"), headers)
            if response.code in (301, 302, 303, 307, 308):
                location = response.headers.getRawHeaders(b"Location")
                response.deliverBody(_Discard())
                if not location:
                    raise MatrixError(502, "M_UNKNOWN", "Redirect without a Location")
                url = urljoin(url, location[0].decode("latin-1"))
                if urlsplit(url).scheme not in ("http", "https"):
                    raise MatrixError(502, "M_UNKNOWN", "Redirect to a URL that is not http")
                continue
            if not 200 <= response.code < 300:
                response.deliverBody(_Discard())
                raise MatrixError(502, "M_UNKNOWN", f"The URL answered {response.code}")
            body = await self._read_limited(response)
            raw_type = response.headers.getRawHeaders(b"Content-Type") or [b""]
            media_type = raw_type[0].decode("latin-1").split(";")[0].strip().lower()
            return media_type, body, url
        raise MatrixError(502, "M_UNKNOWN", "Too many redirects")

    async def _read_limited(self, response: Any) -> bytes:
        chunks: list[bytes] = []
        size = [0]

        def collect(chunk: bytes) -> None:
            size[0] += len(chunk)
            if size[0] > self._max_bytes:
                raise MatrixError(502, "M_TOO_LARGE", "The page is too large to preview")
            chunks.append(chunk)

        import treq  # here, not at start: treq (1.7 MiB) only for servers that use it

        await treq.collect(response, collect)
        return b"".join(chunks)

    async def _image(self, body: bytes, media_type: str, user_id: str, url: str) -> JsonDict:
        with tempfile.TemporaryFile() as f:
            f.write(body)
            f.seek(0)
            mxc = await self._uploader.upload(user_id, f, media_type, None)
        result: JsonDict = {"og:image": mxc, "og:image:type": media_type,
                            "matrix:image:size": len(body)}
        try:
            with pillow().open(io.BytesIO(body)) as image:
                result["og:image:width"], result["og:image:height"] = image.size
        except Exception:
            pass
        return result

    async def _html(self, body: bytes, url: str, user_id: str) -> JsonDict:
        page = await threads.deferToThread(_parse, body)  # up to max_bytes of HTML
        og: JsonDict = {k: v for k, v in page.meta.items() if k.startswith("og:")}
        if "og:title" not in og and page.title.strip():
            og["og:title"] = page.title.strip()[:500]
        if "og:description" not in og and "description" in page.meta:
            og["og:description"] = page.meta["description"][:500]
        image = og.get("og:image") or page.first_image
        og.pop("og:image", None)
        if image:
            image_url = urljoin(url, image)
            try:
                media_type, data, final = await self._fetch(image_url)
                if media_type.startswith("image/"):
                    og.update(await self._image(data, media_type, user_id, final))
            except MatrixError:
                pass  # a page whose image cannot be fetched is still previewed
        return og


class _OpenGraph(HTMLParser):
    """<title>, <meta property|name=... content=...>, and the first <img src>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.title = ""
        self.first_image: str | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "meta":
            name = values.get("property") or values.get("name")
            if name and "content" in values and name not in self.meta and len(self.meta) < 50:
                self.meta[name.lower()] = values["content"][:2000]
        elif tag == "title":
            self._in_title = True
        elif tag == "img" and self.first_image is None and values.get("src"):
            self.first_image = values["src"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title and len(self.title) < 1000:
            self.title += data


def _parse(body: bytes) -> _OpenGraph:
    page = _OpenGraph()
    page.feed(_decode(body))
    page.close()
    return page


def _decode(body: bytes) -> str:
    head = body[:2048].lower()
    for marker in (b"charset=", b'charset="'):
        at = head.find(marker)
        if at >= 0:
            name = head[at + len(marker):].split(b'"')[0].split(b";")[0].split(b">")[0]
            try:
                return body.decode(name.strip(b"' /").decode("ascii"), "replace")
            except (LookupError, UnicodeDecodeError):
                break
    return body.decode("utf-8", "replace")


class _Discard:
    """Reads and drops a body we do not want (a redirect's)."""

    def makeConnection(self, transport: Any) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass
