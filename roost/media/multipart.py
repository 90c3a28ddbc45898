"""The federation media answer: `multipart/mixed`, a JSON part then the file (or a
`Location` header saying where to fetch it).

Writing: the parts around the file are small byte strings; the file streams
between them. Reading: the answer has already been streamed to a file, so the
parts are found by reading its head (the JSON part and the file part's
headers) and its tail (the closing boundary), and the file's bytes are a range
between, copied without ever being held in memory.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO

_HEAD_BYTES = 64 * 1024
_TAIL_BYTES = 4 * 1024


class MultipartError(Exception):
    """Not a usable federation media answer."""


@dataclass(frozen=True)
class Envelope:
    content_type: str  # the whole header, boundary included
    prefix: bytes
    suffix: bytes


def envelope(media_headers: dict[str, str], metadata: dict[str, Any] | None = None) -> Envelope:
    """The bytes before and after the file for a multipart/mixed media answer."""
    boundary = uuid.uuid4().hex
    part_headers = "".join(f"{k}: {v}\r\n" for k, v in media_headers.items())
    prefix = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n"
              f"{json.dumps(metadata or {})}\r\n"
              f"--{boundary}\r\n{part_headers}\r\n").encode()
    suffix = f"\r\n--{boundary}--\r\n".encode()
    return Envelope(f"multipart/mixed; boundary={boundary}", prefix, suffix)


@dataclass(frozen=True)
class MediaPart:
    headers: dict[str, str]  # lower-cased names
    start: int  # offset of the file's first byte in the answer
    end: int  # offset just past its last byte

    @property
    def location(self) -> str | None:
        return self.headers.get("location")


def boundary_of(content_type: str | None) -> str:
    if not content_type or not content_type.lower().startswith("multipart/mixed"):
        raise MultipartError(f"not multipart/mixed: {content_type!r}")
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise MultipartError("multipart answer without a boundary")
    return match.group(1)


def find_media_part(body: BinaryIO, size: int, boundary: str) -> MediaPart:
    """Locate the second part of a multipart answer held in `body` (`size` bytes long)."""
    delimiter = b"--" + boundary.encode("latin-1")
    body.seek(0)
    head = body.read(min(size, _HEAD_BYTES))
    first = head.find(delimiter)
    if first < 0:
        raise MultipartError("no first part")
    second = head.find(b"\r\n" + delimiter, first + len(delimiter))
    if second < 0:
        raise MultipartError("no second part")
    headers_start = head.find(b"\r\n", second + 2 + len(delimiter))
    headers_end = head.find(b"\r\n\r\n", headers_start)
    if headers_start < 0 or headers_end < 0:
        raise MultipartError("second part's headers are cut")
    headers = _parse_headers(head[headers_start + 2:headers_end])
    start = headers_end + 4
    tail_from = max(start, size - _TAIL_BYTES)
    body.seek(tail_from)
    tail = body.read(size - tail_from)
    closing = tail.rfind(b"\r\n" + delimiter)
    if closing < 0:
        raise MultipartError("no closing boundary")
    return MediaPart(headers, start, tail_from + closing)


def _parse_headers(raw: bytes) -> dict[str, str]:
    headers = {}
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("utf-8",
                                                                                   "replace")
    return headers


class RangeReader:
    """A read-only view of bytes [start, end) of a file, for FileStore.put."""

    def __init__(self, f: BinaryIO, start: int, end: int) -> None:
        self._f = f
        self._left = end - start
        f.seek(start)

    def peek(self, n: int) -> bytes:
        position = self._f.tell()
        data = self._f.read(min(n, self._left))
        self._f.seek(position)
        return data

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data
