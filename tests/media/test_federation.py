"""Media between two Roost servers over real TLS: the federation media endpoints
(multipart answers), remote media fetched for local users and cached, the fallback
to the old endpoints, and the remote cache's limit."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.federation.two_servers import FedNode, start_pair
from tests.media.helpers import (
    download,
    header,
    image_of,
    jpeg,
    png,
    split_mxc,
    thumbnail,
    upload,
)


async def _user(node: FedNode, name: str) -> str:
    await node.register(name)
    return node.tokens[name]


def _drop_federation_media_routes(node: FedNode) -> None:
    """Make `node` a server that lacks the federation media endpoints."""
    assert node.server is not None and node.server.hs.federation is not None
    router = node.server.hs.federation.router
    def kept(route: object) -> bool:
        return "/federation/v1/media/" not in route.pattern.pattern  # type: ignore[attr-defined]

    router.routes = [r for r in router.routes if kept(r)]
    router._by_depth = {depth: [r for r in routes if kept(r)]
                        for depth, routes in router._by_depth.items()}


class FederatedMediaTests(TestCase):
    timeout = 120

    async def test_a_user_downloads_and_thumbnails_media_of_the_other_server(self) -> None:
        a, b = await start_pair(self)
        alice, bob = await _user(a, "alice"), await _user(b, "bob")
        assert a.server is not None and b.server is not None
        data = jpeg(640, 480)
        mxc = await upload(a.server, alice, data, "image/jpeg", "photo.jpg")
        resp = await download(b.server, bob, mxc)
        self.assertEqual((resp.status, resp.body), (200, data))
        self.assertEqual(header(resp, "Content-Type"), "image/jpeg")
        self.assertEqual(header(resp, "Content-Disposition"), 'inline; filename="photo.jpg"')
        self.assertIn("sandbox", header(resp, "Content-Security-Policy"))
        origin, media_id = split_mxc(mxc)
        row = await b.server.hs.db.run("row", lambda t: t.query_one(
            "SELECT is_local, media_length FROM media WHERE server_name = %s AND media_id = %s",
            (origin, media_id)))
        self.assertEqual(row, (False, len(data)))
        thumb = await thumbnail(b.server, bob, mxc, "width=96&height=96&method=crop")
        self.assertEqual(thumb.status, 200)
        self.assertEqual(image_of(thumb.body).size, (96, 96))
        # Cached: the origin going away does not stop either being served.
        await a.stop()
        again = await download(b.server, bob, mxc)
        self.assertEqual((again.status, again.body), (200, data))
        thumb_again = await thumbnail(b.server, bob, mxc, "width=96&height=96&method=crop")
        self.assertEqual(thumb_again.body, thumb.body)

    async def test_a_remote_thumbnail_is_cached_and_counted_before_the_file_is_fetched(
        self,
    ) -> None:
        a, b = await start_pair(self)
        alice, bob = await _user(a, "alice"), await _user(b, "bob")
        assert a.server is not None and b.server is not None
        data = png(400, 300)
        mxc = await upload(a.server, alice, data, "image/png")
        thumb = await thumbnail(b.server, bob, mxc, "width=32&height=32&method=crop")
        self.assertEqual((thumb.status, image_of(thumb.body).size), (200, (32, 32)))
        origin, media_id = split_mxc(mxc)
        row = await b.server.hs.db.run("row", lambda t: t.query_one(
            "SELECT is_local, uploaded_ts FROM media WHERE server_name = %s AND media_id = %s",
            (origin, media_id)))
        self.assertEqual(row, (False, None))  # only the thumbnail is here
        cached = await b.server.hs.media._meta.remote_cache_bytes()  # type: ignore[union-attr]
        self.assertEqual(cached, len(thumb.body))
        resp = await download(b.server, bob, mxc)
        self.assertEqual((resp.status, resp.body), (200, data))
        cached = await b.server.hs.media._meta.remote_cache_bytes()  # type: ignore[union-attr]
        self.assertEqual(cached, len(thumb.body) + len(data))

    async def test_unknown_remote_media_is_404(self) -> None:
        a, b = await start_pair(self)
        bob = await _user(b, "bob")
        assert b.server is not None
        resp = await download(b.server, bob, f"mxc://{a.name}/doesnotexist")
        self.assertEqual((resp.status, resp.body["errcode"]), (404, "M_NOT_FOUND"))

    async def test_servers_without_federation_media_are_read_through_the_old_endpoints(
        self,
    ) -> None:
        a, b = await start_pair(self, media={"legacy_unauthenticated_media": True})
        alice, bob = await _user(a, "alice"), await _user(b, "bob")
        assert a.server is not None and b.server is not None
        _drop_federation_media_routes(a)
        data = png(300, 200)
        mxc = await upload(a.server, alice, data, "image/png")
        resp = await download(b.server, bob, mxc)
        self.assertEqual((resp.status, resp.body), (200, data))
        thumb = await thumbnail(b.server, bob, mxc, "width=32&height=32&method=crop")
        self.assertEqual((thumb.status, image_of(thumb.body).size), (200, (32, 32)))

    async def test_the_remote_cache_evicts_the_least_recently_used_past_its_limit(self) -> None:
        a, b = await start_pair(self, media={"remote_cache_max_bytes": 250_000})
        alice, bob = await _user(a, "alice"), await _user(b, "bob")
        assert a.server is not None and b.server is not None
        files = [bytes([i]) * 100_000 for i in range(3)]
        uris = [await upload(a.server, alice, f, "application/octet-stream") for f in files]
        for uri in uris:
            self.assertEqual((await download(b.server, bob, uri)).status, 200)
        cached = await b.server.hs.db.run("cached", lambda t: t.query(
            "SELECT media_id FROM media WHERE NOT is_local ORDER BY media_id"))
        self.assertEqual(sorted(r[0] for r in cached),
                         sorted(split_mxc(u)[1] for u in uris[1:]))
        total = await b.server.hs.db.run("total", lambda t: t.query_one(
            "SELECT sum(media_length) FROM media WHERE NOT is_local"))
        self.assertLessEqual(total[0], 250_000)

    async def test_the_federation_endpoint_answers_multipart_and_needs_a_signature(self) -> None:
        a, b = await start_pair(self)
        alice = await _user(a, "alice")
        assert a.server is not None and b.server is not None
        mxc = await upload(a.server, alice, b"some text", "text/plain", "notes.txt")
        _, media_id = split_mxc(mxc)
        import tempfile

        client = b.server.hs.federation.client  # type: ignore[union-attr]
        with tempfile.TemporaryFile() as sink:
            status, headers = await client.download(
                a.name, f"/_matrix/federation/v1/media/download/{media_id}", None, sink, 10**6)
            sink.seek(0)
            body = sink.read()
        self.assertEqual(status, 200)
        content_type = headers.getRawHeaders(b"Content-Type")[0].decode()
        self.assertTrue(content_type.startswith("multipart/mixed; boundary="))
        boundary = content_type.split("boundary=")[1]
        parts = body.split(f"--{boundary}".encode())
        self.assertEqual(parts[1], b"\r\nContent-Type: application/json\r\n\r\n{}\r\n")
        self.assertIn(b"Content-Type: text/plain; charset=UTF-8\r\n", parts[2])
        self.assertTrue(parts[2].endswith(b"\r\n\r\nsome text\r\n"))
        self.assertEqual(parts[3], b"--\r\n")
        import treq

        unsigned = await treq.get(
            f"https://{a.name}/_matrix/federation/v1/media/download/{media_id}",
            agent=_unchecked_agent())
        self.assertEqual(unsigned.code, 401)


def _unchecked_agent():  # type: ignore[no-untyped-def]
    from twisted.internet import reactor, ssl
    from twisted.web.client import Agent
    from twisted.web.iweb import IPolicyForHTTPS
    from zope.interface import implementer

    @implementer(IPolicyForHTTPS)
    class Unchecked:
        def creatorForNetloc(self, hostname, port):  # type: ignore[no-untyped-def]
            return ssl.CertificateOptions(verify=False)

    return Agent(reactor, contextFactory=Unchecked())
