"""The media endpoints, for clients and for other servers; and how files are sent.

Every answer here, files and errors alike, carries the headers of
`safety.SECURITY_HEADERS` (a sandboxing Content-Security-Policy and nosniff):
they are set before the handler does anything, so the JSON error of a failed
request has them too. Files are streamed from the store with a producer,
never read whole; uploads are read from the spooled body by the store.

The routers are the client API's and the federation listener's, handed in by
wiring; handlers only use what both request types share (roost.http's query
arguments, the Twisted request) plus `user` (clients) or `authenticated_origin`
(servers).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from twisted.internet import defer
from twisted.protocols.basic import FileSender
from twisted.web import server

from roost.http.bodies import ANSWERED, Answered
from roost.http.errors import MatrixError
from roost.media import multipart, safety
from roost.media.repository import MediaRepository, Served

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MEDIA = "/_matrix/media/(?:v3|r0)"
CLIENT_MEDIA = "/_matrix/client/v1/media"
# Upload paths: their bodies may be as large as max_upload_size (wiring tells the site).
UPLOAD_PREFIXES = (b"/_matrix/media/v3/upload", b"/_matrix/media/r0/upload")


class Previewer(Protocol):
    async def preview(self, url: str, user_id: str) -> JsonDict: ...


class Router(Protocol):
    def add(self, method: str, path: str, handler: Any, **kwargs: Any) -> None: ...


def register_client(router: Router, repo: MediaRepository, previewer: Previewer | None) -> None:
    """Uploads, authenticated media, the old unauthenticated downloads, config, previews."""

    async def upload(req: Any) -> JsonDict:
        _secure(req.http)
        uri = await repo.upload(req.user.user_id, req.http.content,
                                _content_type(req.http), req.arg("filename"))
        return {"content_uri": uri}

    async def create(req: Any) -> JsonDict:
        _secure(req.http)
        uri, expires = await repo.create(req.user.user_id)
        return {"content_uri": uri, "unused_expires_at": expires}

    async def upload_to(req: Any) -> JsonDict:
        _secure(req.http)
        await repo.upload_to(req.user.user_id, req.params["server_name"], req.params["media_id"],
                             req.http.content, _content_type(req.http), req.arg("filename"))
        return {}

    async def config(req: Any) -> JsonDict:
        _secure(req.http)
        return {"m.upload.size": repo.settings.max_upload_size}

    def download(legacy: bool) -> Any:
        """(The old endpoints fetch remote media too, for clients, when asked.)"""
        async def handle(req: Any) -> Answered:
            _secure(req.http)
            served = await repo.get(req.params["server_name"], req.params["media_id"],
                                    allow_remote=req.bool_arg("allow_remote", True),
                                    legacy=legacy, timeout_ms=_timeout(req))
            name = req.params.get("file_name") or served.upload_name
            return await send_file(req.http, served, name)
        return handle

    def thumbnail(legacy: bool) -> Any:
        async def handle(req: Any) -> Answered:
            _secure(req.http)
            served = await repo.thumbnail(
                req.params["server_name"], req.params["media_id"], *_thumbnail_args(req),
                allow_remote=req.bool_arg("allow_remote", True), legacy=legacy,
                timeout_ms=_timeout(req))
            return await send_file(req.http, served, None)
        return handle

    async def preview_url(req: Any) -> JsonDict:
        _secure(req.http)
        url = req.arg("url")
        if not url:
            raise MatrixError(400, "M_MISSING_PARAM", "missing parameter: url")
        ts = req.int_arg("ts")
        if ts is not None and ts < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "ts must not be negative")
        assert previewer is not None
        return await previewer.preview(url, req.user.user_id)

    router.add("POST", f"{MEDIA}/upload", upload, stream_body=True, rate_limit="media")
    router.add("PUT", f"{MEDIA}/upload/{{server_name}}/{{media_id}}", upload_to, stream_body=True,
               rate_limit="media")
    router.add("POST", "/_matrix/media/v1/create", create, rate_limit="media")
    router.add("GET", f"{CLIENT_MEDIA}/config", config)
    router.add("GET", f"{MEDIA}/config", config)
    for path_end in ("{server_name}/{media_id}", "{server_name}/{media_id}/{file_name}"):
        router.add("GET", f"{CLIENT_MEDIA}/download/{path_end}", download(legacy=False))
        router.add("GET", f"{MEDIA}/download/{path_end}", download(legacy=True), auth=False)
    router.add("GET", f"{CLIENT_MEDIA}/thumbnail/{{server_name}}/{{media_id}}",
               thumbnail(legacy=False))
    router.add("GET", f"{MEDIA}/thumbnail/{{server_name}}/{{media_id}}", thumbnail(legacy=True),
               auth=False)
    if previewer is not None:
        router.add("GET", f"{CLIENT_MEDIA}/preview_url", preview_url, rate_limit="media")


def register_federation(router: Router, repo: MediaRepository) -> None:
    """`/_matrix/federation/v1/media/download|thumbnail/{mediaId}`: multipart answers."""

    async def download(req: Any) -> Answered:
        _secure(req.http)
        req.authenticated_origin  # noqa: B018 (authenticated by the transport; asserted)
        served = await repo.get_for_federation(req.params["media_id"], _timeout(req))
        return await send_file(req.http, served, served.upload_name, multipart_answer=True)

    async def thumbnail(req: Any) -> Answered:
        _secure(req.http)
        req.authenticated_origin  # noqa: B018
        served = await repo.thumbnail(repo.settings.server_name, req.params["media_id"],
                                      *_thumbnail_args(req), for_federation=True,
                                      timeout_ms=_timeout(req))
        return await send_file(req.http, served, None, multipart_answer=True)

    router.add("GET", "/_matrix/federation/v1/media/download/{media_id}", download)
    router.add("GET", "/_matrix/federation/v1/media/thumbnail/{media_id}", thumbnail)
    # The old unauthenticated endpoints, which servers without the federation ones fetch
    # from this port; under the same switch as for clients.
    for path_end in ("{server_name}/{media_id}", "{server_name}/{media_id}/{file_name}"):
        router.add("GET", f"{MEDIA}/download/{path_end}", _legacy_download(repo), auth=False)
    router.add("GET", f"{MEDIA}/thumbnail/{{server_name}}/{{media_id}}", _legacy_thumbnail(repo),
               auth=False)


def _legacy_download(repo: MediaRepository) -> Any:
    async def handle(req: Any) -> Answered:
        _secure(req.http)
        served = await repo.get(req.params["server_name"], req.params["media_id"],
                                allow_remote=False, legacy=True, timeout_ms=_timeout(req))
        return await send_file(req.http, served,
                               req.params.get("file_name") or served.upload_name)
    return handle


def _legacy_thumbnail(repo: MediaRepository) -> Any:
    async def handle(req: Any) -> Answered:
        _secure(req.http)
        served = await repo.thumbnail(req.params["server_name"], req.params["media_id"],
                                      *_thumbnail_args(req), allow_remote=False, legacy=True,
                                      timeout_ms=_timeout(req))
        return await send_file(req.http, served, None)
    return handle


def _thumbnail_args(req: Any) -> tuple[int, int, str, bool]:
    width, height = req.int_arg("width"), req.int_arg("height")
    if width is None or height is None:
        raise MatrixError(400, "M_MISSING_PARAM", "width and height are required")
    if width < 1 or height < 1:
        raise MatrixError(400, "M_INVALID_PARAM", "width and height must be positive")
    method = req.arg("method", "scale")
    if method not in ("crop", "scale"):
        raise MatrixError(400, "M_INVALID_PARAM", "method must be crop or scale")
    return width, height, method, req.bool_arg("animated", False)


def _timeout(req: Any) -> int:
    value = req.int_arg("timeout_ms", 20_000)
    if value < 0:
        raise MatrixError(400, "M_INVALID_PARAM", "timeout_ms must not be negative")
    return value


def _content_type(request: server.Request) -> str | None:
    raw = request.getHeader(b"Content-Type")
    return raw.decode("latin-1") if raw else None


def _secure(request: server.Request) -> None:
    for name, value in safety.SECURITY_HEADERS.items():
        request.setHeader(name.encode(), value.encode())


async def send_file(request: server.Request, served: Served, filename: str | None,
                    multipart_answer: bool = False) -> Answered:
    """Stream `served` as the answer (wrapped in multipart/mixed for servers)."""
    try:
        media_headers = {
            "Content-Type": safety.served_type(served.media_type),
            "Content-Disposition": safety.content_disposition(served.media_type, filename),
        }
        prefix = suffix = b""
        if multipart_answer:
            env = multipart.envelope(media_headers)
            prefix, suffix = env.prefix, env.suffix
            headers = {"Content-Type": env.content_type}
        else:
            headers = media_headers
        if request.finished or request._disconnected:
            return ANSWERED
        request.setResponseCode(200)
        _secure(request)
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        request.setHeader(b"Cache-Control", b"public, max-age=86400, s-maxage=86400")
        for name, value in headers.items():
            request.setHeader(name.encode(), value.encode("latin-1", "replace"))
        request.setHeader(b"Content-Length",
                          str(len(prefix) + served.length + len(suffix)).encode())
        if request.method == b"HEAD":
            request.finish()
            return ANSWERED
        if prefix:
            request.write(prefix)
        await FileSender().beginFileTransfer(served.file, request)
        if suffix:
            request.write(suffix)
        if not request.finished and not request._disconnected:
            request.finish()
    except defer.CancelledError:
        raise
    except Exception as e:  # the peer went away mid-file: nothing left to answer
        logger.info("sending media stopped: %s", e)
    finally:
        served.file.close()
    return ANSWERED
