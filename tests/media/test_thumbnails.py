"""Thumbnails: crop and scale to configured sizes, cached, animated kept when asked,
decompression bombs refused."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image
from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.media.helpers import animated_gif, header, image_of, jpeg, png, thumbnail, upload
from tests.server_harness import start_server


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A few hundred bytes claiming width x height pixels (the IHDR rewritten)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


class ThumbnailTests(TestCase):
    async def test_crop_gives_the_configured_box_and_scale_keeps_the_aspect(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        mxc = await upload(server, token, jpeg(640, 480), "image/jpeg")
        crop = await thumbnail(server, token, mxc, "width=90&height=90&method=crop")
        self.assertEqual(crop.status, 200)
        self.assertEqual(header(crop, "Content-Type"), "image/jpeg")
        self.assertEqual(image_of(crop.body).size, (96, 96))  # the configured 96x96 crop
        scale = await thumbnail(server, token, mxc, "width=300&height=300&method=scale")
        self.assertEqual(image_of(scale.body).size, (640, 480))  # 640x480 fits the box asked
        small = await thumbnail(server, token, mxc, "width=100&height=100&method=scale")
        self.assertEqual(image_of(small.body).size, (320, 240))
        self.assertIn("sandbox", header(scale, "Content-Security-Policy"))

    async def test_a_thumbnail_is_made_once_and_then_served_from_the_store(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        mxc = await upload(server, token, png(200, 200))
        first = await thumbnail(server, token, mxc, "width=32&height=32&method=crop")
        second = await thumbnail(server, token, mxc, "width=30&height=30&method=crop")
        self.assertEqual(first.body, second.body)
        rows = await server.hs.db.run("n", lambda t: t.query_one(
            "SELECT count(*) FROM media_thumbnails"))
        self.assertEqual(rows[0], 1)

    async def test_concurrent_requests_for_one_thumbnail_each_get_all_of_it(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        mxc = await upload(server, token, jpeg(1200, 900), "image/jpeg")
        answers = await defer.gatherResults([
            defer.ensureDeferred(thumbnail(server, token, mxc, "width=320&height=240"))
            for _ in range(5)])
        self.assertEqual({a.status for a in answers}, {200})
        self.assertEqual(len({a.body for a in answers}), 1)
        self.assertEqual(image_of(answers[0].body).size, (320, 240))

    async def test_an_animated_gif_stays_animated_only_when_asked(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        mxc = await upload(server, token, animated_gif(), "image/gif")
        animated = await thumbnail(server, token, mxc, "width=32&height=32&method=crop&animated=true")
        self.assertEqual(header(animated, "Content-Type"), "image/gif")
        self.assertEqual(getattr(image_of(animated.body), "n_frames", 1), 3)
        still = await thumbnail(server, token, mxc, "width=32&height=32&method=crop")
        self.assertEqual(header(still, "Content-Type"), "image/png")
        self.assertEqual(getattr(image_of(still.body), "n_frames", 1), 1)

    async def test_bad_thumbnail_requests(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        mxc = await upload(server, token, png())
        for query in ("width=-1&height=10", "height=10", "width=10&height=10&method=stretch",
                      "width=x&height=10"):
            resp = await thumbnail(server, token, mxc, query)
            self.assertEqual(resp.status, 400, query)
        text = await upload(server, token, b"not an image", "text/plain")
        resp = await thumbnail(server, token, text, "width=32&height=32")
        self.assertEqual(resp.status, 400)
        unknown = await thumbnail(server, token, "mxc://test.roost/nothinghere", "width=32&height=32")
        self.assertEqual((unknown.status, unknown.body["errcode"]), (404, "M_NOT_FOUND"))

    async def test_a_decompression_bomb_is_refused_without_decoding_it(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        mxc = await upload(server, token, bomb_png(), "image/png")
        resp = await thumbnail(server, token, mxc, "width=32&height=32&method=crop")
        self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_UNKNOWN"))
        self.assertIn("too large", resp.body["error"])
        # The server is still fine.
        ok = await thumbnail(server, token, await upload(server, token, png()), "width=32&height=32")
        self.assertEqual(ok.status, 200)
