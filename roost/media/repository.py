"""The media repository: uploads, local and remote media, thumbnails, quarantine, delete.

Bytes go through a `FileStore` (store.py), metadata through the storage
layer's `MediaStore`; other servers' media comes through a `RemoteMediaSource`
(the federation client, handed in by wiring). Nothing here knows HTTP: the
resource turns what this returns into answers.

Remote media is fetched once (concurrent requests for the same file wait for
the one fetch), from the authenticated federation endpoint, falling back to
the old `/_matrix/media/v3` endpoint for servers that lack it; it is cached,
and the least recently used cached files are evicted past the cache's limit.
Thumbnails are made once per configured size, in a thread, and kept.
"""

from __future__ import annotations

import io
import logging
import re
import secrets
import string
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, TypeVar

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorTime

from roost.http.errors import MatrixError
from roost.media import multipart, safety
from roost.media.store import MEDIA_ID_RE, FileStore, MediaKey, TooLargeError
from roost.media.thumbnails import (
    THUMBNAILABLE,
    Size,
    ThumbnailError,
    choose_size,
    make_thumbnail,
    thumbnail_name,
)
from roost.storage.media import MediaRow, MediaStore, ThumbnailRow

logger = logging.getLogger(__name__)
T = TypeVar("T")
_ID_ALPHABET = string.ascii_letters
_MAX_WAIT_MS = 60_000
# Multipart framing around a remote file (the JSON part, headers, boundaries).
_FRAMING_BYTES = 64 * 1024
_EVICT_BATCH = 100


class RemoteMediaSource(Protocol):
    """How remote media is fetched (the federation client implements it)."""

    async def download(self, destination: str, path: str, args: dict[str, Any] | None,
                       sink: Any, max_bytes: int, *, timeout_s: float | None = None
                       ) -> tuple[int, Any]: ...

    async def download_url(self, url: str, sink: Any, max_bytes: int,
                           timeout_s: float | None = None) -> tuple[int, Any]: ...


@dataclass(frozen=True)
class MediaSettings:
    server_name: str
    max_upload_size: int
    max_pending_uploads: int
    unused_expiry_ms: int
    legacy_unauthenticated: bool
    remote_cache_max_bytes: int
    max_image_pixels: int
    thumbnail_sizes: tuple[Size, ...]


@dataclass
class Served:
    """A file to send: the open file (the caller closes it), its length and type."""

    file: BinaryIO
    length: int
    media_type: str
    upload_name: str | None


def not_found() -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", "Media not found")


def check_ids(server_name: str, media_id: str) -> None:
    """400 for a server name or media id that cannot be one."""
    if not _valid_server_name(server_name):
        raise MatrixError(400, "M_INVALID_PARAM", "Malformed server name")
    if not MEDIA_ID_RE.match(media_id):
        raise MatrixError(400, "M_INVALID_PARAM", "Malformed media id")


def _valid_server_name(name: str) -> bool:
    return bool(re.match(r"^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,255})(:\d{1,5})?$", name))


class MediaRepository:
    def __init__(self, settings: MediaSettings, store: FileStore, meta: MediaStore,
                 clock: IReactorTime, remote: RemoteMediaSource | None, scratch_dir: str) -> None:
        self.settings = settings
        self._store = store
        self._meta = meta
        self._clock = clock
        self._remote = remote
        self._scratch = scratch_dir
        self._inflight: dict[Any, list[defer.Deferred[Any]]] = {}
        self._waiting_upload: dict[tuple[str, str], list[defer.Deferred[None]]] = {}
        self._locks: dict[str, defer.DeferredLock] = {}

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    # -- uploads -------------------------------------------------------------------

    async def upload(self, user_id: str, source: BinaryIO, content_type: str | None,
                     filename: str | None) -> str:
        """Store an upload under a new id; its mxc:// URI."""
        media_id = _new_id()
        key = MediaKey(self.settings.server_name, media_id)
        media_type, length = await self._put_upload(key, source, content_type)
        try:
            await self._meta.record_local(self.settings.server_name, media_id, user_id,
                                          media_type, safety.sanitise_filename(filename), length,
                                          self._now(), self.settings.legacy_unauthenticated)
        except BaseException:
            await self._store.delete(key)
            raise
        return f"mxc://{self.settings.server_name}/{media_id}"

    async def create(self, user_id: str) -> tuple[str, int]:
        """Reserve an id for a later upload: (mxc URI, when the reservation lapses)."""
        media_id = _new_id()
        now = self._now()
        expires = now + self.settings.unused_expiry_ms
        ok = await self._meta.create_pending(
            self.settings.server_name, media_id, user_id, now, expires,
            self.settings.max_pending_uploads, self.settings.legacy_unauthenticated)
        if not ok:
            raise MatrixError(429, "M_LIMIT_EXCEEDED", "Too many pending uploads",
                              retry_after_ms=60_000)
        return f"mxc://{self.settings.server_name}/{media_id}", expires

    async def upload_to(self, user_id: str, server_name: str, media_id: str, source: BinaryIO,
                        content_type: str | None, filename: str | None) -> None:
        """Fill an id reserved with `create`."""
        check_ids(server_name, media_id)
        if server_name != self.settings.server_name:
            raise not_found()
        lock = self._locks.setdefault(media_id, defer.DeferredLock())
        await lock.acquire()
        try:
            row = await self._meta.get(server_name, media_id)
            if row is None or (not row.uploaded and (row.unused_expires_ts or 0) <= self._now()):
                raise not_found()
            if row.user_id != user_id:
                raise MatrixError(403, "M_FORBIDDEN", "This media id was made by another user")
            if row.uploaded:
                raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
            key = MediaKey(server_name, media_id)
            media_type, length = await self._put_upload(key, source, content_type)
            if not await self._meta.complete_pending(server_name, media_id, media_type,
                                                     safety.sanitise_filename(filename), length,
                                                     self._now()):
                await self._store.delete(key)
                raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(media_id, None)
        for d in self._waiting_upload.pop((server_name, media_id), []):
            d.callback(None)

    async def _put_upload(self, key: MediaKey, source: BinaryIO, content_type: str | None
                          ) -> tuple[str, int]:
        head = source.read(16)
        source.seek(0)
        media_type = safety.checked_type(safety.declared_type(content_type), head)
        try:
            length = await self._store.put(key, source, self.settings.max_upload_size)
        except TooLargeError:
            raise MatrixError(413, "M_TOO_LARGE", "Upload too large") from None
        return media_type, length

    # -- reading ---------------------------------------------------------------------

    async def get(self, server_name: str, media_id: str, *, allow_remote: bool = True,
                  legacy: bool = False, timeout_ms: int = 20_000) -> Served:
        """The media to serve a client. `legacy`: asked through the unauthenticated
        endpoints, which serve only media that arrived while they were switched on."""
        check_ids(server_name, media_id)
        if server_name == self.settings.server_name:
            row = await self._local_row(media_id, timeout_ms)
        else:
            if not allow_remote or self._remote is None:
                raise not_found()
            row = await self._remote_row(server_name, media_id)
        if legacy and not row.unauthenticated:
            raise not_found()
        return await self._open(row)

    async def get_for_federation(self, media_id: str, timeout_ms: int = 20_000) -> Served:
        """Local media asked for by another server."""
        check_ids(self.settings.server_name, media_id)
        return await self._open(await self._local_row(media_id, timeout_ms))

    async def _local_row(self, media_id: str, timeout_ms: int) -> MediaRow:
        server = self.settings.server_name
        row = await self._meta.get(server, media_id)
        if row is not None and not row.uploaded and (row.unused_expires_ts or 0) > self._now():
            await self._wait_for_upload(server, media_id, min(max(timeout_ms, 0), _MAX_WAIT_MS))
            row = await self._meta.get(server, media_id)
        if row is None or row.quarantined_by is not None:
            raise not_found()
        if not row.uploaded:
            if (row.unused_expires_ts or 0) > self._now():
                raise MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
            raise not_found()
        return row

    async def _wait_for_upload(self, server: str, media_id: str, timeout_ms: int) -> None:
        d: defer.Deferred[None] = defer.Deferred()
        waiters = self._waiting_upload.setdefault((server, media_id), [])
        waiters.append(d)
        d.addTimeout(timeout_ms / 1000, self._clock, onTimeoutCancel=lambda *_: None)
        try:
            await d
        finally:
            if d in waiters:
                waiters.remove(d)
            if not waiters:
                self._waiting_upload.pop((server, media_id), None)

    async def _open(self, row: MediaRow) -> Served:
        found = await self._store.open(MediaKey(row.server_name, row.media_id))
        if found is None:
            raise not_found()
        f, length = found
        if not row.is_local:
            await self._meta.touch(row.server_name, row.media_id, self._now())
        return Served(f, length, row.media_type or safety.OCTET_STREAM, row.upload_name)

    # -- thumbnails ------------------------------------------------------------------

    async def thumbnail(self, server_name: str, media_id: str, width: int, height: int,
                        method: str, animated: bool, *, allow_remote: bool = True,
                        legacy: bool = False, for_federation: bool = False,
                        timeout_ms: int = 20_000) -> Served:
        check_ids(server_name, media_id)
        if width < 1 or height < 1 or method not in ("crop", "scale"):
            raise MatrixError(400, "M_INVALID_PARAM",
                              "width and height must be positive; method crop or scale")
        size = choose_size(list(self.settings.thumbnail_sizes), width, height, method)
        if size is None:
            raise MatrixError(400, "M_UNKNOWN", "Thumbnails are not configured")
        if server_name == self.settings.server_name:
            row = await self._local_row(media_id, timeout_ms)
        elif for_federation or not allow_remote or self._remote is None:
            raise not_found()
        else:
            cached = await self._meta.get(server_name, media_id)
            if legacy and (cached is None or not cached.unauthenticated) \
                    and not self.settings.legacy_unauthenticated:
                raise not_found()
            cached = await self._cached_thumbnail(server_name, media_id, size, animated)
            if cached is not None:
                await self._meta.touch(server_name, media_id, self._now())
                return cached
            # One fetch for concurrent requests; each then opens its own file.
            if await self._once(("rthumb", server_name, media_id, size, animated),
                                lambda: self._fetch_remote_thumbnail(server_name, media_id,
                                                                     size, animated)):
                cached = await self._cached_thumbnail(server_name, media_id, size, animated)
                if cached is not None:
                    return cached
            row = await self._remote_row(server_name, media_id)
        if legacy and not row.unauthenticated:
            raise not_found()
        cached = await self._cached_thumbnail(row.server_name, row.media_id, size, animated)
        if cached is None:
            await self._once(("thumb", server_name, media_id, size, animated),
                             lambda: self._make_thumbnail(row, size, animated))
            cached = await self._cached_thumbnail(row.server_name, row.media_id, size, animated)
        if cached is None:
            raise not_found()
        return cached

    async def _cached_thumbnail(self, server: str, media_id: str, size: Size, animated: bool
                                ) -> Served | None:
        for thumb in await self._meta.thumbnails(server, media_id):
            if (thumb.width, thumb.height, thumb.method, thumb.animated) == \
                    (size.width, size.height, size.method, animated):
                found = await self._store.open(
                    MediaKey(server, media_id, thumbnail_name(size, animated)))
                if found is not None:
                    return Served(found[0], found[1], thumb.media_type, None)
        return None

    async def _make_thumbnail(self, row: MediaRow, size: Size, animated: bool) -> None:
        """Make and keep the thumbnail (Pillow in a thread)."""
        if row.media_type not in THUMBNAILABLE:
            raise MatrixError(400, "M_UNKNOWN", "This media cannot be thumbnailed")
        original = await self._open(row)
        try:
            data, media_type, _ = await threads.deferToThread(
                make_thumbnail, original.file, size, animated, self.settings.max_image_pixels)
        except ThumbnailError as e:
            raise MatrixError(400, "M_UNKNOWN", f"Cannot thumbnail this media: {e}") from None
        finally:
            original.file.close()
        await self._keep_thumbnail(row.server_name, row.media_id, size, animated, data,
                                   media_type)

    async def _keep_thumbnail(self, server: str, media_id: str, size: Size, animated: bool,
                              data: bytes | BinaryIO, media_type: str) -> None:
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        key = MediaKey(server, media_id, thumbnail_name(size, animated))
        length = await self._store.put(key, source)
        await self._meta.record_thumbnail(server, media_id, ThumbnailRow(
            size.width, size.height, size.method, animated, media_type, length))

    async def _fetch_remote_thumbnail(self, server: str, media_id: str, size: Size,
                                      animated: bool) -> bool:
        """Fetch and keep the remote server's thumbnail; False when it will not make one
        (the caller then thumbnails the original itself)."""
        assert self._remote is not None
        args = {"width": str(size.width), "height": str(size.height), "method": size.method,
                "animated": "true" if animated else "false", "timeout_ms": "20000"}
        with tempfile.TemporaryFile(dir=self._scratch) as body:
            try:
                source, media_type, _name = await self._fetch(server, media_id, body,
                                                              "thumbnail", args)
            except MatrixError as e:
                if e.status == 404:
                    raise
                logger.info("no thumbnail of %s/%s from its server (%s): making one", server,
                            media_id, e.error)
                return False
            media_type = safety.checked_type(media_type, _peek(source))
            if media_type not in THUMBNAILABLE:
                return False
            await self._meta.ensure_remote(server, media_id, self._now(),
                                           self.settings.legacy_unauthenticated)
            await self._keep_thumbnail(server, media_id, size, animated, source, media_type)
        await self._evict(keep=(server, media_id))
        return True

    # -- remote media ----------------------------------------------------------------

    async def _remote_row(self, server: str, media_id: str) -> MediaRow:
        row = await self._meta.get(server, media_id)
        if row is not None and row.uploaded and row.quarantined_by is None:
            if await self._store.open(MediaKey(server, media_id)) is not None:
                return row
        if row is not None and row.quarantined_by is not None:
            raise not_found()
        return await self._once(("remote", server, media_id),
                                lambda: self._fetch_remote(server, media_id))

    async def _fetch_remote(self, server: str, media_id: str) -> MediaRow:
        with tempfile.TemporaryFile(dir=self._scratch) as body:
            source, media_type, name = await self._fetch(server, media_id, body, "download",
                                                         {"timeout_ms": "20000"})
            media_type = safety.checked_type(media_type, _peek(source))
            key = MediaKey(server, media_id)
            try:
                length = await self._store.put(key, source, self.settings.max_upload_size)
            except TooLargeError:
                raise MatrixError(502, "M_TOO_LARGE", "Remote media is too large") from None
        await self._meta.record_remote(server, media_id, media_type, name, length, self._now(),
                                       self.settings.legacy_unauthenticated)
        await self._evict(keep=(server, media_id))
        row = await self._meta.get(server, media_id)
        if row is None:
            raise not_found()
        return row

    async def _fetch(self, server: str, media_id: str, body: BinaryIO, kind: str,
                     args: dict[str, str]) -> tuple[Any, str, str | None]:
        """Fetch into `body`: (a reader of the media's bytes, its type, its file name).
        The federation endpoint first; the old media endpoint if the server lacks it."""
        assert self._remote is not None
        limit = self.settings.max_upload_size + _FRAMING_BYTES
        try:
            _status, headers = await self._remote.download(
                server, f"/_matrix/federation/v1/media/{kind}/{media_id}", args, body, limit)
            content_type = _header(headers, b"Content-Type")
            size = body.tell()
            part = multipart.find_media_part(body, size, multipart.boundary_of(content_type))
            if part.location:
                return await self._follow(part.location, body, limit)
            return (multipart.RangeReader(body, part.start, part.end),
                    safety.declared_type(part.headers.get("content-type")),
                    safety.filename_from_disposition(part.headers.get("content-disposition")))
        except multipart.MultipartError as e:
            raise MatrixError(502, "M_UNKNOWN", f"Bad media answer from {server}: {e}") from None
        except MatrixError:
            raise
        except Exception as e:
            if not _endpoint_missing(e):
                raise _remote_error(server, e) from None
        # The server does not know the federation media endpoints: the old ones.
        body.seek(0)
        body.truncate()
        try:
            _status, headers = await self._remote.download(
                server, f"/_matrix/media/v3/{kind}/{server}/{media_id}",
                {**args, "allow_remote": "false"}, body, limit)
        except Exception as e:
            raise _remote_error(server, e) from None
        body.seek(0)
        return (body, safety.declared_type(_header(headers, b"Content-Type")),
                safety.filename_from_disposition(_header(headers, b"Content-Disposition")))

    async def _follow(self, location: str, body: BinaryIO, limit: int
                      ) -> tuple[Any, str, str | None]:
        assert self._remote is not None
        body.seek(0)
        body.truncate()
        try:
            _status, headers = await self._remote.download_url(location, body, limit)
        except Exception as e:
            raise _remote_error(location[:80], e) from None
        body.seek(0)
        return (body, safety.declared_type(_header(headers, b"Content-Type")),
                safety.filename_from_disposition(_header(headers, b"Content-Disposition")))

    async def _evict(self, keep: tuple[str, str]) -> None:
        """Drop the least recently used remote media until the cache fits its limit."""
        total = await self._meta.remote_cache_bytes()
        while total > self.settings.remote_cache_max_bytes:
            batch = [r for r in await self._meta.least_recent_remote(_EVICT_BATCH)
                     if (r[0], r[1]) != keep]
            if not batch:
                return
            for server, media_id, length in batch:
                await self.delete(server, media_id)
                total -= length
                if total <= self.settings.remote_cache_max_bytes:
                    return

    # -- administration ----------------------------------------------------------------

    async def quarantine(self, server_name: str, media_id: str, by: str | None) -> bool:
        """Hide media from everyone (`by`: the admin), or release it (None)."""
        check_ids(server_name, media_id)
        return await self._meta.set_quarantined(server_name, media_id, by)

    async def delete(self, server_name: str, media_id: str) -> bool:
        """Delete media, its thumbnails and its files; False if it was not known."""
        check_ids(server_name, media_id)
        known = await self._meta.delete(server_name, media_id)
        await self._store.delete(MediaKey(server_name, media_id))
        return known

    async def expire_pending(self) -> int:
        """Forget reserved ids whose upload never came; how many."""
        return len(await self._meta.expired_pending(self._now()))

    async def _once(self, key: Any, make: Callable[[], Awaitable[T]]) -> T:
        """Run `make` once for concurrent callers with the same key; all get its result."""
        if key in self._inflight:
            d: defer.Deferred[T] = defer.Deferred()
            self._inflight[key].append(d)
            return await d
        self._inflight[key] = []
        try:
            result = await make()
        except BaseException as e:
            for d in self._inflight.pop(key):
                d.errback(e)
            raise
        for d in self._inflight.pop(key):
            d.callback(result)
        return result


def _new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _peek(source: Any) -> bytes:
    """The first bytes of a reader, without consuming them."""
    if isinstance(source, multipart.RangeReader):
        return source.peek(16)
    position = source.tell()
    head = source.read(16)
    source.seek(position)
    return head


def _header(headers: Any, name: bytes) -> str | None:
    """One header of a Twisted `Headers` as text."""
    values = headers.getRawHeaders(name) if headers is not None else None
    if not values:
        return None
    value = values[0]
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _endpoint_missing(e: Exception) -> bool:
    """An error meaning "no such endpoint" rather than "no such media"."""
    status = getattr(e, "status", None)
    errcode = getattr(e, "errcode", None)
    return status in (400, 404, 405, 501) and errcode in (None, "M_UNRECOGNIZED")


def _remote_error(server: str, e: Exception) -> MatrixError:
    status = getattr(e, "status", None)
    errcode = getattr(e, "errcode", None)
    if status == 404 or errcode == "M_NOT_FOUND":
        return not_found()
    if errcode == "M_TOO_LARGE" or type(e).__name__ == "ResponseTooLargeError":
        return MatrixError(502, "M_TOO_LARGE", "Remote media is too large")
    logger.info("remote media from %s failed: %s", server, e)
    return MatrixError(502, "M_UNKNOWN", f"Could not fetch media from {server}")
