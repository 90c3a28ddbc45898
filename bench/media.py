"""Memory of a 100 MiB upload and download, and a 1 MiB image's thumbnail off the reactor.

    .venv/bin/python bench/media.py

One Roost process (max_upload_size raised to 200 MiB). Its resident memory is
sampled every 20 ms while a client streams a 100 MiB upload to it (chunked,
never whole in the client either) and while it streams the file back; the
figure is the peak over each transfer against the RSS just before (after a
small upload, download and thumbnail have loaded every code path).

Then a 1 MiB JPEG (noise, 1,600 x 1,200) is thumbnailed at the five configured
sizes while another client asks /_matrix/client/versions every 5 ms: if the
thumbnails were made on the reactor, those requests would stall for as long
as Pillow runs; the worst latency seen is reported beside Pillow's time.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import sys
import threading
import time
import urllib.request
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import print_result, roost_server, summary  # noqa: E402

MIB = 1024 * 1024
SIZE = 100 * MIB
CHUNK = 256 * 1024


class PeakRss:
    """Samples a process's RSS in a thread until stopped; keeps the peak."""

    def __init__(self, read: Any) -> None:
        self._read = read
        self.peak = read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._read())
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())


def _connection(base_url: str) -> http.client.HTTPConnection:
    host, port = base_url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=300)


def register(base_url: str) -> str:
    body = json.dumps({"username": "media", "password": "pw-media-bench",
                       "auth": {"type": "m.login.dummy"}}).encode()
    req = urllib.request.Request(base_url + "/_matrix/client/v3/register", data=body,
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["access_token"]


def upload_stream(base_url: str, token: str, size: int, content_type: str) -> str:
    """POST `size` bytes made chunk by chunk (chunked transfer encoding)."""
    block = os.urandom(CHUNK)

    def chunks() -> Any:
        sent = 0
        while sent < size:
            piece = block[: min(CHUNK, size - sent)]
            sent += len(piece)
            yield piece

    conn = _connection(base_url)
    conn.request("POST", "/_matrix/media/v3/upload?filename=big.bin", body=chunks(),
                 headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
                 encode_chunked=True)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"upload: {resp.status} {data[:200]!r}")
    return json.loads(data)["content_uri"]


def upload_bytes(base_url: str, token: str, data: bytes, content_type: str) -> str:
    req = urllib.request.Request(base_url + "/_matrix/media/v3/upload", data=data, method="POST",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())["content_uri"]


def get(base_url: str, token: str, path: str) -> int:
    """GET and discard the body chunk by chunk; its length."""
    conn = _connection(base_url)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    total = 0
    while True:
        piece = resp.read(CHUNK)
        if not piece:
            break
        total += len(piece)
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"GET {path}: {resp.status}")
    return total


def media_path(mxc: str, kind: str = "download") -> str:
    return f"/_matrix/client/v1/media/{kind}/" + mxc.removeprefix("mxc://")


def noise_jpeg() -> bytes:
    from PIL import Image

    image = Image.frombytes("RGB", (1600, 1200), os.urandom(1600 * 1200 * 3))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=70)
    return buf.getvalue()


def thumbnails_while_pinging(base_url: str, token: str) -> dict[str, Any]:
    jpeg = noise_jpeg()
    sizes = [(32, 32, "crop"), (96, 96, "crop"), (320, 240, "scale"), (640, 480, "scale"),
             (800, 600, "scale")]
    mxcs = [upload_bytes(base_url, token, jpeg, "image/jpeg") for _ in sizes]
    pings: list[float] = []
    done = threading.Event()

    def ping() -> None:
        while not done.is_set():
            start = time.monotonic()
            with urllib.request.urlopen(base_url + "/_matrix/client/versions", timeout=30):
                pass
            pings.append(time.monotonic() - start)
            time.sleep(0.005)

    pinger = threading.Thread(target=ping, daemon=True)
    pinger.start()
    time.sleep(0.3)
    made: list[float] = []
    for mxc, (w, h, method) in zip(mxcs, sizes, strict=True):
        start = time.monotonic()
        get(base_url, token, media_path(mxc, "thumbnail") + f"?width={w}&height={h}&method={method}")
        made.append(time.monotonic() - start)
    done.set()
    pinger.join()
    return {"image_bytes": len(jpeg), "thumbnail_request_ms": [round(m * 1000) for m in made],
            "versions_while_thumbnailing": {**summary(pings), "max_ms": round(max(pings) * 1000, 1),
                                            "requests": len(pings)}}


def main() -> None:
    with roost_server("media: {max_upload_size: 209715200}") as server:
        token = register(server.base_url)
        # Warm every path once (Pillow, the store, the producer) before the baseline.
        small = upload_bytes(server.base_url, token, noise_jpeg(), "image/jpeg")
        get(server.base_url, token, media_path(small))
        get(server.base_url, token, media_path(small, "thumbnail") + "?width=32&height=32")
        time.sleep(1.0)
        idle = server.rss_mib()
        with PeakRss(server.rss_mib) as up:
            start = time.monotonic()
            mxc = upload_stream(server.base_url, token, SIZE, "application/octet-stream")
            upload_s = time.monotonic() - start
        before_download = server.rss_mib()
        with PeakRss(server.rss_mib) as down:
            start = time.monotonic()
            length = get(server.base_url, token, media_path(mxc))
            download_s = time.monotonic() - start
        assert length == SIZE, length
        result: dict[str, Any] = {
            "roost_rss_mib": {
                "idle": round(idle, 1),
                "peak_during_100mib_upload": round(up.peak, 1),
                "peak_during_100mib_download": round(down.peak, 1),
                "upload_peak_over_idle": round(up.peak - idle, 1),
                "download_peak_over_before": round(down.peak - before_download, 1),
            },
            "upload_mib_per_s": round(SIZE / MIB / upload_s, 1),
            "download_mib_per_s": round(SIZE / MIB / download_s, 1),
            "thumbnails": thumbnails_while_pinging(server.base_url, token),
        }
        print_result("media", result)


if __name__ == "__main__":
    main()
