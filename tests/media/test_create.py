"""The two-step upload: POST /_matrix/media/v1/create, then PUT the bytes; its limits."""

from __future__ import annotations

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from tests.media.helpers import download, png, split_mxc
from tests.server_harness import start_server

CREATE = "/_matrix/media/v1/create"


class CreateThenUploadTests(TestCase):
    async def test_create_then_upload_then_download(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        created = await server.request("POST", CREATE, token=token)
        self.assertEqual(created.status, 200)
        mxc = created.body["content_uri"]
        self.assertGreater(created.body["unused_expires_at"], 0)
        origin, media_id = split_mxc(mxc)
        data = png()
        put = await server.request("PUT", f"/_matrix/media/v3/upload/{origin}/{media_id}",
                                   raw=data, token=token, headers={"Content-Type": "image/png"})
        self.assertEqual((put.status, put.body), (200, {}))
        self.assertEqual((await download(server, token, mxc)).body, data)
        again = await server.request("PUT", f"/_matrix/media/v3/upload/{origin}/{media_id}",
                                     raw=b"other", token=token)
        self.assertEqual((again.status, again.body["errcode"]), (409, "M_CANNOT_OVERWRITE_MEDIA"))
        self.assertEqual((await download(server, token, mxc)).body, data)

    async def test_only_the_creator_may_upload(self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        bob = (await server.register("bob"))["access_token"]
        origin, media_id = split_mxc((await server.request("POST", CREATE, token=alice)
                                      ).body["content_uri"])
        put = await server.request("PUT", f"/_matrix/media/v3/upload/{origin}/{media_id}",
                                   raw=b"x", token=bob)
        self.assertEqual((put.status, put.body["errcode"]), (403, "M_FORBIDDEN"))

    async def test_pending_uploads_are_limited_per_user(self) -> None:
        server = await start_server(self, media={"max_pending_uploads": 2})
        token = (await server.register("alice"))["access_token"]
        for _ in range(2):
            self.assertEqual((await server.request("POST", CREATE, token=token)).status, 200)
        third = await server.request("POST", CREATE, token=token)
        self.assertEqual((third.status, third.body["errcode"]), (429, "M_LIMIT_EXCEEDED"))
        other = (await server.register("bob"))["access_token"]
        self.assertEqual((await server.request("POST", CREATE, token=other)).status, 200)

    async def test_download_waits_for_the_upload_then_times_out_with_not_yet_uploaded(
        self,
    ) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        mxc = (await server.request("POST", CREATE, token=token)).body["content_uri"]
        waited = await download(server, token, mxc, query="timeout_ms=50")
        self.assertEqual((waited.status, waited.body["errcode"]), (504, "M_NOT_YET_UPLOADED"))
        # A download already waiting gets the bytes as soon as they are uploaded.
        pending = defer.ensureDeferred(download(server, token, mxc, query="timeout_ms=20000"))
        await task.deferLater(reactor, 0.2, lambda: None)
        origin, media_id = split_mxc(mxc)
        await server.request("PUT", f"/_matrix/media/v3/upload/{origin}/{media_id}",
                             raw=b"late bytes", token=token,
                             headers={"Content-Type": "text/plain"})
        self.assertEqual((await pending).body, b"late bytes")

    async def test_an_expired_reservation_cannot_be_uploaded_and_frees_its_place(self) -> None:
        clock = task.Clock()
        clock.advance(1_000_000)
        server = await start_server(self, clock=clock,
                                    media={"max_pending_uploads": 1, "unused_expiry": "1m"})
        token = (await server.register("alice"))["access_token"]
        origin, media_id = split_mxc((await server.request("POST", CREATE, token=token)
                                      ).body["content_uri"])
        clock.advance(61)
        put = await server.request("PUT", f"/_matrix/media/v3/upload/{origin}/{media_id}",
                                   raw=b"x", token=token)
        self.assertEqual((put.status, put.body["errcode"]), (404, "M_NOT_FOUND"))
        self.assertEqual((await server.request("POST", CREATE, token=token)).status, 200)
        self.assertEqual(await server.hs.media.expire_pending(), 0)
        clock.advance(61)
        self.assertEqual(await server.hs.media.expire_pending(), 1)
