"""A minimal HTTP/1.1 keep-alive client for the fan-out benches' long-polling receivers.

The receivers share the machine's cores with the server they measure: with
aiohttp each /sync answer costs the receiving process about as much CPU as it
costs a Roost reader to build it (docs/benchmarks.md, 2026-12-04), so the
latencies measured on two cores were partly the load generator's. Real clients
run elsewhere. This client does only what a receiver needs: one connection, a
GET with the access token, an answer with Content-Length or chunked, its JSON
body parsed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit


class HttpError(Exception):
    """A status other than 200, or a connection that closed mid-answer."""


class LeanClient:
    """One keep-alive connection; requests one at a time (a receiver's long poll)."""

    def __init__(self, base: str, token: str) -> None:
        parts = urlsplit(base)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._head = (f"Host: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
                      "Connection: keep-alive\r\n\r\n").encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> Any:
        """GET `path` (from /_matrix on) and return its JSON body; HttpError otherwise."""
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._reader, self._writer
        assert reader is not None
        writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self._head)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            status, length, chunked, close = _parse_head(head)
            body = await (_read_chunked(reader) if chunked else reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            self.close()
            raise HttpError(f"connection lost: {e}") from e
        if close:
            self.close()
        if status != 200:
            raise HttpError(f"{status}: {body[:200]!r}")
        return json.loads(body)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def _parse_head(head: bytes) -> tuple[int, int, bool, bool]:
    """(status, Content-Length, chunked, connection closes) of a response head."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked, close = 0, False, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    return status, length, chunked, close


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are sent to these receivers
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
