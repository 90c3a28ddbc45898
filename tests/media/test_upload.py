"""Uploads in one step, the media config, upload rate limits, the local store's cleanup."""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from tests.media.helpers import CLIENT_MEDIA, download, header, png, split_mxc, upload
from tests.server_harness import start_server


class OneStepUploadTests(TestCase):
    async def test_upload_then_download_gives_the_same_bytes_type_and_name(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        data = png()
        mxc = await upload(server, token, data, "image/png", "cat.png")
        self.assertTrue(mxc.startswith("mxc://test.roost/"))
        resp = await download(server, token, mxc)
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.body, data)
        self.assertEqual(header(resp, "Content-Type"), "image/png")
        self.assertEqual(header(resp, "Content-Disposition"), 'inline; filename="cat.png"')
        self.assertTrue(header(resp, "Content-Security-Policy").startswith("sandbox"))
        self.assertEqual(header(resp, "X-Content-Type-Options"), "nosniff")
        # The file is on disk under data_dir, in a folder of its own server.
        _, media_id = split_mxc(mxc)
        path = os.path.join(server.hs.config.path(server.hs.config.data_dir), "media",
                            "test.roost", media_id[:2], media_id)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)

    async def test_download_under_another_file_name(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        mxc = await upload(server, token, b"hello", "text/plain", "a.txt")
        resp = await download(server, token, mxc, "/other.txt")
        self.assertEqual(resp.body, b"hello")
        self.assertEqual(header(resp, "Content-Type"), "text/plain; charset=UTF-8")
        self.assertEqual(header(resp, "Content-Disposition"), 'inline; filename="other.txt"')

    async def test_upload_needs_a_token(self) -> None:
        server = await start_server(self)
        resp = await server.request("POST", "/_matrix/media/v3/upload", raw=b"x")
        self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_MISSING_TOKEN"))

    async def test_config_gives_the_upload_limit(self) -> None:
        server = await start_server(self, media={"max_upload_size": 12345})
        token = (await server.register("alice"))["access_token"]
        resp = await server.request("GET", f"{CLIENT_MEDIA}/config", token=token)
        self.assertEqual(resp.body, {"m.upload.size": 12345})

    async def test_uploads_are_rate_limited_per_user(self) -> None:
        server = await start_server(self, rate_limits={"media": {"per_second": 0.001,
                                                                 "burst": 2}})
        token = (await server.register("alice"))["access_token"]
        for _ in range(2):
            await upload(server, token, b"x", "text/plain")
        resp = await server.request("POST", "/_matrix/media/v3/upload", raw=b"x", token=token,
                                    headers={"Content-Type": "text/plain"})
        self.assertEqual((resp.status, resp.body["errcode"]), (429, "M_LIMIT_EXCEEDED"))
        other = (await server.register("bob"))["access_token"]
        await upload(server, other, b"y", "text/plain")


class StoreTests(TestCase):
    def test_half_written_files_left_by_a_crash_are_removed_at_start(self) -> None:
        from roost.media.store import LocalFileStore

        root = self.mktemp()
        store = LocalFileStore(root)
        stale = os.path.join(store.tmp_dir, "a" * 32)
        recent = os.path.join(store.tmp_dir, "b" * 32)
        for path in (stale, recent):
            with open(path, "wb") as f:
                f.write(b"half")
        os.utime(stale, (0, 0))
        LocalFileStore(root)
        self.assertFalse(os.path.exists(stale))
        self.assertTrue(os.path.exists(recent))
