"""Images made with Pillow for the media tests, and upload/download helpers."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from tests.server_harness import Response, RunningServer

CLIENT_MEDIA = "/_matrix/client/v1/media"


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def jpeg(width: int = 640, height: int = 480) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


def animated_gif(width: int = 100, height: int = 100, frames: int = 3) -> bytes:
    images = [Image.new("RGB", (width, height), (i * 80, 0, 0)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return buf.getvalue()


def image_of(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


async def upload(server: RunningServer, token: str, data: bytes,
                 content_type: str = "image/png", filename: str | None = None) -> str:
    path = "/_matrix/media/v3/upload" + (f"?filename={filename}" if filename else "")
    resp = await server.request("POST", path, raw=data, token=token,
                                headers={"Content-Type": content_type})
    assert resp.status == 200, (resp.status, resp.body)
    return resp.body["content_uri"]


def split_mxc(mxc: str) -> tuple[str, str]:
    server, media_id = mxc[len("mxc://"):].split("/")
    return server, media_id


async def download(server: RunningServer, token: str | None, mxc: str, suffix: str = "",
                   query: str = "") -> Response:
    origin, media_id = split_mxc(mxc)
    return await server.request("GET", f"{CLIENT_MEDIA}/download/{origin}/{media_id}{suffix}"
                                + (f"?{query}" if query else ""), token=token)


async def thumbnail(server: RunningServer, token: str | None, mxc: str, query: str,
                    prefix: str = CLIENT_MEDIA) -> Response:
    origin, media_id = split_mxc(mxc)
    return await server.request("GET", f"{prefix}/thumbnail/{origin}/{media_id}?{query}",
                                token=token)


def header(resp: Response, name: str) -> Any:
    values = resp.headers.getRawHeaders(name)
    return values[0] if values else None
