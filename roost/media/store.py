"""Where media bytes live: a narrow interface, and files under data_dir behind it.

Handlers and the repository only ever `put` a file under a key, `open` one to
read, and `delete` one, so an S3-compatible store can be written against
`FileStore` without touching them. Keys are made here from validated parts
(server name, media id, thumbnail shape), never from raw request text.

On disk: `<root>/<server>/<id[:2]>/<id>` for media and
`<root>/<server>/thumbnails/<id[:2]>/<id>/<w>x<h>-<method>[-animated]` for
thumbnails. A file is written to `<root>/tmp/` and renamed into place, so a
reader never sees half a file and a failed write leaves nothing behind.
Copies run in threads: a 100 MiB file is never on the reactor or in memory.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import BinaryIO, Protocol
from urllib.parse import quote

from twisted.internet import threads

MEDIA_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class MediaKey:
    """One stored file: a piece of media, or one of its thumbnails."""

    server_name: str
    media_id: str
    thumbnail: str | None = None  # e.g. "96x96-crop" or "320x240-scale-animated"

    def __post_init__(self) -> None:
        if not MEDIA_ID_RE.match(self.media_id):
            raise ValueError(f"bad media id {self.media_id!r}")
        if self.thumbnail is not None and not re.match(r"^[a-z0-9-]+$", self.thumbnail):
            raise ValueError(f"bad thumbnail name {self.thumbnail!r}")


class FileStore(Protocol):
    """What the media repository needs of a place to keep bytes."""

    async def put(self, key: MediaKey, source: BinaryIO, max_bytes: int | None = None) -> int:
        """Copy `source` from its current position to the end under `key`; the bytes
        written. More than `max_bytes` raises `TooLargeError` and stores nothing."""

    async def open(self, key: MediaKey) -> tuple[BinaryIO, int] | None:
        """The stored file opened for reading and its size; None if absent."""

    async def delete(self, key: MediaKey) -> None:
        """Remove the file (and, for media, its thumbnails); absent is fine."""


class TooLargeError(Exception):
    """The source was longer than allowed."""


class LocalFileStore:
    """`FileStore` on the local disk, under `root` (data_dir/media)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.tmp_dir = os.path.join(self.root, "tmp")
        os.makedirs(self.tmp_dir, exist_ok=True)
        self._remove_stale_temp_files()

    def _remove_stale_temp_files(self, older_than_s: float = 3600) -> None:
        """Half-written files a crash left behind (another process's recent ones are kept)."""
        cutoff = time.time() - older_than_s
        for name in os.listdir(self.tmp_dir):
            path = os.path.join(self.tmp_dir, name)
            try:
                if re.match(r"^[0-9a-f]{32}$", name) and os.stat(path).st_mtime < cutoff:
                    os.remove(path)
            except FileNotFoundError:
                pass

    def path(self, key: MediaKey) -> str:
        server = quote(key.server_name, safe=".-")
        shard = key.media_id[:2]
        if key.thumbnail is None:
            return os.path.join(self.root, server, shard, key.media_id)
        return os.path.join(self.root, server, "thumbnails", shard, key.media_id, key.thumbnail)

    async def put(self, key: MediaKey, source: BinaryIO, max_bytes: int | None = None) -> int:
        return await threads.deferToThread(self._put, key, source, max_bytes)

    def _put(self, key: MediaKey, source: BinaryIO, max_bytes: int | None) -> int:
        final = self.path(key)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        temp = os.path.join(self.tmp_dir, uuid.uuid4().hex)
        written = 0
        try:
            with open(temp, "wb") as out:
                while True:
                    chunk = source.read(_CHUNK)
                    if not chunk:
                        break
                    written += len(chunk)
                    if max_bytes is not None and written > max_bytes:
                        raise TooLargeError(f"more than {max_bytes} bytes")
                    out.write(chunk)
            os.replace(temp, final)
        except BaseException:
            _remove(temp)
            raise
        return written

    async def open(self, key: MediaKey) -> tuple[BinaryIO, int] | None:
        try:
            f = open(self.path(key), "rb")  # noqa: SIM115 (the caller streams and closes it)
        except FileNotFoundError:
            return None
        return f, os.fstat(f.fileno()).st_size

    async def delete(self, key: MediaKey) -> None:
        await threads.deferToThread(self._delete, key)

    def _delete(self, key: MediaKey) -> None:
        _remove(self.path(key))
        if key.thumbnail is None:
            thumbs = self.path(MediaKey(key.server_name, key.media_id, "x"))
            shutil.rmtree(os.path.dirname(thumbs), ignore_errors=True)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
