"""matrix-js-sdk uploads an avatar and a file and reads them through authenticated media;
the avatar shows in the user's profile (tests/js/media.mjs)."""

from __future__ import annotations

import base64

from twisted.trial.unittest import TestCase

from tests.clients.js_harness import run_js
from tests.media.helpers import image_of, png
from tests.server_harness import start_server


class JsSdkMediaTests(TestCase):
    timeout = 300

    async def test_avatar_and_file_round_trip_through_authenticated_media(self) -> None:
        server = await start_server(self)
        avatar = png(128, 128)
        run = await run_js(self, "media.mjs", {
            "base_url": server.base_url, "avatar_base64": base64.b64encode(avatar).decode(),
            "file_text": "notes from the sdk"})
        avatar_uri = run.step("upload_avatar")
        self.assertTrue(avatar_uri.startswith("mxc://test.roost/"), avatar_uri)
        self.assertEqual(run.step("set_avatar").get("avatar_url"), avatar_uri)
        self.assertGreater(run.step("media_config")["m.upload.size"], 0)

        got = run.step("download_avatar")
        self.assertTrue(got["url"].startswith("/_matrix/client/v1/media/download/"), got["url"])
        self.assertEqual(got["status"], 200)
        self.assertEqual(base64.b64decode(got["base64"]), avatar)
        self.assertEqual(got["content_type"], "image/png")
        self.assertIn("sandbox", got["csp"])

        thumb = run.step("thumbnail_avatar")
        self.assertTrue(thumb["url"].startswith("/_matrix/client/v1/media/thumbnail/"), thumb["url"])
        self.assertEqual(thumb["status"], 200)
        self.assertEqual(image_of(base64.b64decode(thumb["base64"])).size, (32, 32))

        text = run.step("download_file")
        self.assertEqual((text["status"], base64.b64decode(text["base64"])),
                         (200, b"notes from the sdk"))
        self.assertEqual(text["disposition"], 'inline; filename="notes.txt"')
