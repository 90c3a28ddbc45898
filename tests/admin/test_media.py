"""Admins quarantine, release and delete media; quarantined media is served to nobody."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.admin.test_users import A, admin_and_user

PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100ffff03000006000557bfab"
    "d40000000049454e44ae426082")


class AdminMediaTests(TestCase):
    async def test_quarantine_release_and_delete(self) -> None:
        server, admin, alice = await admin_and_user(self)
        token = alice["access_token"]
        up = await server.request("POST", "/_matrix/media/v3/upload?filename=a.png", raw=PNG_1PX,
                                  headers={"Content-Type": "image/png"}, token=token)
        self.assertEqual(up.status, 200, up.body)
        server_name, media_id = up.body["content_uri"][len("mxc://"):].split("/")
        download = f"/_matrix/client/v1/media/download/{server_name}/{media_id}"
        self.assertEqual((await server.request("GET", download, token=token)).status, 200)

        path = f"{server_name}/{media_id}"
        refused = await server.request("POST", f"{A}/v1/media/quarantine/{path}", {},
                                       token=token)
        self.assertEqual(refused.status, 403)
        held = await server.request("POST", f"{A}/v1/media/quarantine/{path}", {}, token=admin)
        self.assertEqual(held.status, 200, held.body)
        hidden = await server.request("GET", download, token=token)
        self.assertNotEqual(hidden.status, 200)
        released = await server.request("POST", f"{A}/v1/media/unquarantine/{path}", {},
                                        token=admin)
        self.assertEqual(released.status, 200)
        self.assertEqual((await server.request("GET", download, token=token)).status, 200)

        deleted = await server.request("DELETE", f"{A}/v1/media/{path}", token=admin)
        self.assertEqual(deleted.body, {"deleted_media": [media_id], "total": 1})
        gone = await server.request("GET", download, token=token)
        self.assertEqual((gone.status, gone.body["errcode"]), (404, "M_NOT_FOUND"))
        again = await server.request("DELETE", f"{A}/v1/media/{path}", token=admin)
        self.assertEqual(again.status, 404)
        bad = await server.request("DELETE", f"{A}/v1/media/{server_name}/bad%20id", token=admin)
        self.assertEqual(bad.status, 400)
