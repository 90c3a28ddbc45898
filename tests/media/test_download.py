"""Downloads: safe headers on every answer, the old unauthenticated endpoints behind
their switch, bad ids, quarantine and delete."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.media.helpers import CLIENT_MEDIA, download, header, png, split_mxc, upload
from tests.server_harness import start_server

LEGACY = "/_matrix/media/v3"


class SafeServingTests(TestCase):
    async def test_script_capable_types_are_attachments_and_safe_ones_inline(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        cases = [
            (b"<script>alert(1)</script>", "text/html", "attachment"),
            (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", "attachment"),
            (png(), "image/png", "inline"),
            (b"plain", "text/plain", "inline"),
        ]
        for data, media_type, disposition in cases:
            resp = await download(server, token, await upload(server, token, data, media_type))
            self.assertEqual(resp.body, data)
            self.assertEqual(header(resp, "Content-Disposition"), disposition, media_type)
            self.assertIn("sandbox", header(resp, "Content-Security-Policy"))
            self.assertEqual(header(resp, "X-Content-Type-Options"), "nosniff")

    async def test_a_declared_image_type_the_bytes_do_not_match_is_served_as_octet_stream(
        self,
    ) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        mxc = await upload(server, token, b"\x00encrypted-looking bytes", "image/png")
        resp = await download(server, token, mxc)
        self.assertEqual(header(resp, "Content-Type"), "application/octet-stream")
        self.assertEqual(header(resp, "Content-Disposition"), "attachment")

    async def test_file_names_are_sanitised(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        mxc = await upload(server, token, b"x", "text/plain",
                           "..%2F..%2Fetc%2Fpasswd%22%0D%0AX-Evil%3A%201")
        disposition = header(await download(server, token, mxc), "Content-Disposition")
        self.assertEqual(disposition, 'inline; filename="passwdX-Evil 1"')
        mxc = await upload(server, token, b"x", "text/plain", "r%C3%A9sum%C3%A9.txt")
        disposition = header(await download(server, token, mxc), "Content-Disposition")
        self.assertEqual(disposition, "inline; filename*=utf-8''r%C3%A9sum%C3%A9.txt")

    async def test_errors_carry_the_media_headers_too(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        resp = await server.request("GET", f"{CLIENT_MEDIA}/download/test.roost/nosuchmedia",
                                    token=token)
        self.assertEqual((resp.status, resp.body["errcode"]), (404, "M_NOT_FOUND"))
        self.assertIn("sandbox", header(resp, "Content-Security-Policy"))
        self.assertEqual(header(resp, "X-Content-Type-Options"), "nosniff")


class BadIdTests(TestCase):
    async def test_unknown_is_404_malformed_is_400_and_a_token_is_needed(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        unknown = await server.request("GET", f"{CLIENT_MEDIA}/download/test.roost/abcdef",
                                       token=token)
        self.assertEqual((unknown.status, unknown.body["errcode"]), (404, "M_NOT_FOUND"))
        for path in ("/download/bad%20server/abcdef", "/download/test.roost/bad%2Eid",
                     "/download/test.roost/..", "/thumbnail/test.roost/a%2Fb?width=1&height=1"):
            resp = await server.request("GET", CLIENT_MEDIA + path, token=token)
            self.assertEqual(resp.status, 400, (path, resp.body))
        anonymous = await server.request("GET", f"{CLIENT_MEDIA}/download/test.roost/abcdef")
        self.assertEqual((anonymous.status, anonymous.body["errcode"]), (401, "M_MISSING_TOKEN"))

    async def test_remote_media_is_not_fetched_when_allow_remote_is_false(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        resp = await server.request(
            "GET", f"{CLIENT_MEDIA}/download/other.example/abcdef?allow_remote=false",
            token=token)
        self.assertEqual((resp.status, resp.body["errcode"]), (404, "M_NOT_FOUND"))


class LegacyEndpointTests(TestCase):
    async def test_off_by_default(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        origin, media_id = split_mxc(await upload(server, token, png()))
        resp = await server.request("GET", f"{LEGACY}/download/{origin}/{media_id}")
        self.assertEqual((resp.status, resp.body["errcode"]), (404, "M_NOT_FOUND"))

    async def test_on_it_serves_media_uploaded_while_on_and_not_what_came_while_off(
        self,
    ) -> None:
        folder = self.mktemp()
        server = await start_server(self, data_dir=folder,
                                    media={"legacy_unauthenticated_media": True})
        token = (await server.register("alice"))["access_token"]
        data = png()
        before = split_mxc(await upload(server, token, data))
        resp = await server.request("GET", f"{LEGACY}/download/{before[0]}/{before[1]}")
        self.assertEqual((resp.status, resp.body), (200, data))
        self.assertIn("sandbox", header(resp, "Content-Security-Policy"))
        thumb = await server.request(
            "GET", f"{LEGACY}/thumbnail/{before[0]}/{before[1]}?width=32&height=32&method=crop")
        self.assertEqual(thumb.status, 200)
        dsn = server.hs.db.dsn
        await server.stop()
        # Switched off: media uploaded from now on is never served without a token.
        server = await start_server(self, dsn=dsn, data_dir=folder)
        token = (await server.register("bob"))["access_token"]
        after = split_mxc(await upload(server, token, data))
        for origin, media_id in (before, after):
            resp = await server.request("GET", f"{LEGACY}/download/{origin}/{media_id}")
            expected = 200 if (origin, media_id) == before else 404
            self.assertEqual(resp.status, expected)
        await server.stop()
        server = await start_server(self, dsn=dsn, data_dir=folder,
                                    media={"legacy_unauthenticated_media": True})
        resp = await server.request("GET", f"{LEGACY}/download/{after[0]}/{after[1]}")
        self.assertEqual(resp.status, 404)


class QuarantineAndDeleteTests(TestCase):
    async def test_quarantined_media_is_hidden_and_released_deleted_media_is_gone(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        mxc = await upload(server, token, png())
        origin, media_id = split_mxc(mxc)
        await server.request("GET", f"{CLIENT_MEDIA}/thumbnail/{origin}/{media_id}"
                             "?width=32&height=32&method=crop", token=token)
        repo = server.hs.media
        self.assertTrue(await repo.quarantine(origin, media_id, "@admin:test.roost"))
        self.assertEqual((await download(server, token, mxc)).status, 404)
        self.assertTrue(await repo.quarantine(origin, media_id, None))
        self.assertEqual((await download(server, token, mxc)).status, 200)
        self.assertTrue(await repo.delete(origin, media_id))
        self.assertEqual((await download(server, token, mxc)).status, 404)
        self.assertFalse(await repo.delete(origin, media_id))
        import os

        root = os.path.join(server.hs.config.path(server.hs.config.data_dir), "media")
        self.assertEqual([f for d, _s, files in os.walk(root) for f in files], [])
