"""Media between Roost and a real Synapse on loopback, both ways, thumbnails included."""

from __future__ import annotations

import urllib.error
import urllib.request

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.federation.synapse_harness import start_synapse
from tests.federation.two_servers import start_node
from tests.media.helpers import (
    animated_gif,
    download,
    header,
    image_of,
    jpeg,
    png,
    split_mxc,
    thumbnail,
    upload,
)


def _http(method: str, url: str, token: str, data: bytes | None = None,
          content_type: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    """A blocking request to Synapse's client listener (run in a thread)."""
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


class SynapseMediaTests(TestCase):
    timeout = 300

    async def test_synapse_fetches_roosts_media_and_roost_fetches_synapses(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        await roost.register("bob")
        token = roost.tokens["bob"]
        assert roost.server is not None
        _alice, synapse_token = await threads.deferToThread(synapse.register, "alice")

        # Synapse's user reads media uploaded to Roost: Synapse fetches it from
        # Roost's /_matrix/federation/v1/media/download (multipart), signed.
        data = jpeg(640, 480)
        mxc = await upload(roost.server, token, data, "image/jpeg", "from-roost.jpg")
        origin, media_id = split_mxc(mxc)
        media = f"{synapse.client_url}/_matrix/client/v1/media"
        status, body, headers = await threads.deferToThread(
            _http, "GET", f"{media}/download/{origin}/{media_id}", synapse_token)
        self.assertEqual((status, body), (200, data))
        self.assertEqual(headers.get("Content-Type"), "image/jpeg")
        status, body, _ = await threads.deferToThread(
            _http, "GET", f"{media}/thumbnail/{origin}/{media_id}?width=96&height=96&method=crop",
            synapse_token)
        self.assertEqual(status, 200)
        self.assertEqual(image_of(body).size, (96, 96))

        # Roost's user reads media uploaded to Synapse, thumbnails included (an animated
        # one too).
        for upload_data, content_type in ((png(300, 200), "image/png"),
                                          (animated_gif(120, 120), "image/gif")):
            status, body, _ = await threads.deferToThread(
                _http, "POST", f"{synapse.client_url}/_matrix/media/v3/upload?filename=s.img",
                synapse_token, upload_data, content_type)
            self.assertEqual(status, 200, body)
            import json

            synapse_mxc = json.loads(body)["content_uri"]
            self.assertEqual(split_mxc(synapse_mxc)[0], synapse.name)
            resp = await download(roost.server, token, synapse_mxc)
            self.assertEqual((resp.status, resp.body), (200, upload_data))
            self.assertEqual(header(resp, "Content-Type"), content_type)
            self.assertIn("sandbox", header(resp, "Content-Security-Policy"))
            thumb = await thumbnail(roost.server, token, synapse_mxc,
                                    "width=32&height=32&method=crop")
            self.assertEqual(thumb.status, 200, thumb.body)
            self.assertEqual(image_of(thumb.body).size, (32, 32))
