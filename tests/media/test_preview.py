"""URL previews: off by default; when on, private addresses are refused (directly,
through DNS, and after a redirect), and a page's OpenGraph data is returned with
its image stored as local media."""

from __future__ import annotations

from urllib.parse import quote

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web import resource, server, util

from tests.media.helpers import download, png
from tests.server_harness import start_server

PREVIEW = "/_matrix/client/v1/media/preview_url"
PAGE = b"""<!doctype html><html><head><title>Ignored title</title>
<meta property="og:title" content="A &amp; B">
<meta property="og:description" content="What the page is about">
<meta property="og:image" content="/cat.png"></head><body><p>hi</p></body></html>"""


class _Png(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", b"image/png")
        return png(120, 80)


class _Html(resource.Resource):
    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self._body = body

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return self._body


def _web(testcase: TestCase) -> int:
    """A small website on 127.0.0.1: a page, its image, a redirect to 127.0.0.2."""
    root = resource.Resource()
    root.putChild(b"page", _Html(PAGE))
    root.putChild(b"cat.png", _Png())
    root.putChild(b"big", _Html(b"<html>" + b"x" * 300_000 + b"</html>"))
    port = reactor.listenTCP(0, server.Site(root), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    number = port.getHost().port
    root.putChild(b"away", util.Redirect(f"http://127.0.0.2:{number}/page".encode()))
    return number


def _enabled(blocklist: list[str] | None = None, **extra: object) -> dict:
    preview: dict = {"enabled": True, **extra}
    if blocklist is not None:
        preview["ip_range_blocklist"] = blocklist
    return {"url_preview": preview}


class UrlPreviewTests(TestCase):
    async def test_off_by_default(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        resp = await server.request("GET", f"{PREVIEW}?url=https%3A%2F%2Fexample.org", token=token)
        self.assertEqual((resp.status, resp.body["errcode"]), (404, "M_UNRECOGNIZED"))

    async def test_a_private_address_is_refused_directly_and_through_dns(self) -> None:
        port = _web(self)
        server = await start_server(self, media=_enabled())  # the default ranges
        token = (await server.register("alice"))["access_token"]
        for url in (f"http://127.0.0.1:{port}/page", f"http://localhost:{port}/page",
                    f"http://[::1]:{port}/page"):
            resp = await server.request("GET", f"{PREVIEW}?url={quote(url, safe='')}",
                                        token=token)
            self.assertEqual((resp.status, resp.body["errcode"]), (403, "M_FORBIDDEN"), url)

    async def test_a_redirect_to_a_blocked_address_is_refused(self) -> None:
        port = _web(self)
        server = await start_server(self, media=_enabled(["127.0.0.2/32"]))
        token = (await server.register("alice"))["access_token"]
        url = quote(f"http://127.0.0.1:{port}/away", safe="")
        resp = await server.request("GET", f"{PREVIEW}?url={url}", token=token)
        self.assertEqual((resp.status, resp.body["errcode"]), (403, "M_FORBIDDEN"))

    async def test_an_allowed_page_is_previewed_with_its_image_stored_here(self) -> None:
        port = _web(self)
        server = await start_server(self, media=_enabled(["127.0.0.2/32"]))
        token = (await server.register("alice"))["access_token"]
        url = quote(f"http://127.0.0.1:{port}/page", safe="")
        resp = await server.request("GET", f"{PREVIEW}?url={url}", token=token)
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(resp.body["og:title"], "A & B")
        self.assertEqual(resp.body["og:description"], "What the page is about")
        self.assertEqual((resp.body["og:image:width"], resp.body["og:image:height"]), (120, 80))
        self.assertTrue(resp.body["og:image"].startswith("mxc://test.roost/"))
        image = await download(server, token, resp.body["og:image"])
        self.assertEqual((image.status, image.body), (200, png(120, 80)))
        self.assertEqual(resp.body["matrix:image:size"], len(image.body))

    async def test_size_limit_and_bad_urls(self) -> None:
        port = _web(self)
        server = await start_server(self, media=_enabled(["127.0.0.2/32"], max_bytes=100_000))
        token = (await server.register("alice"))["access_token"]
        big = quote(f"http://127.0.0.1:{port}/big", safe="")
        resp = await server.request("GET", f"{PREVIEW}?url={big}", token=token)
        self.assertEqual(resp.status, 502)
        for url in ("file%3A%2F%2F%2Fetc%2Fpasswd", "not-a-url"):
            resp = await server.request("GET", f"{PREVIEW}?url={url}", token=token)
            self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_PARAM"))
        missing = await server.request("GET", PREVIEW, token=token)
        self.assertEqual((missing.status, missing.body["errcode"]), (400, "M_MISSING_PARAM"))
