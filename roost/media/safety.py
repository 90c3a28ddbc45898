"""Serving media safely: which types may be shown inline, file names, the headers.

A browser given an uploaded file must never run it as part of this origin. So
every media answer carries `Content-Security-Policy: sandbox` and
`X-Content-Type-Options: nosniff`; only types that cannot carry script are
served `inline`, everything else as an `attachment`; and the declared type is
checked against the first bytes for the image types we would show inline (an
encrypted blob declared `image/png` is served as `application/octet-stream`).
File names are cut to a safe subset before they reach a header.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

# Types a browser shows without running anything (as Synapse's list, by behaviour).
INLINE_TYPES = frozenset({
    "text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
    "image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave",
    "audio/wav", "audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac",
})
OCTET_STREAM = "application/octet-stream"
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_TYPE_RE = re.compile(rf"^({_TOKEN})/({_TOKEN})$")

# The first bytes of the image formats we show inline or thumbnail.
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/apng": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}

SECURITY_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'; script-src 'none'; plugin-types"
                               " application/pdf; style-src 'unsafe-inline'; media-src 'self';"
                               " object-src 'self';",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
}


def declared_type(header: str | None) -> str:
    """The media type of a Content-Type header (parameters dropped, lower-cased);
    `application/octet-stream` when absent or malformed."""
    if not header:
        return OCTET_STREAM
    main = header.split(";", 1)[0].strip().lower()
    return main if _TYPE_RE.match(main) else OCTET_STREAM


def checked_type(media_type: str, head: bytes) -> str:
    """`media_type`, unless it names an image format whose signature `head` lacks."""
    magic = _MAGIC.get(media_type)
    if magic is None:
        return media_type
    if not any(head.startswith(m) for m in magic):
        return OCTET_STREAM
    if media_type == "image/webp" and head[8:12] != b"WEBP":
        return OCTET_STREAM
    return media_type


def served_type(media_type: str | None) -> str:
    """The Content-Type header to send: text gets a charset."""
    media_type = media_type or OCTET_STREAM
    if media_type.startswith("text/"):
        return media_type + "; charset=UTF-8"
    return media_type


def sanitise_filename(name: str | None) -> str | None:
    """A file name fit for a header and a disk: no path, no controls, no quotes, at most
    255 characters; None when nothing is left."""
    if not name:
        return None
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C" and c not in '"<>:|?*;')
    name = name.strip(" .")
    return name[:255] or None


def content_disposition(media_type: str | None, filename: str | None) -> str:
    """`inline` only for script-safe types, else `attachment`; the name as RFC 6266 asks."""
    kind = "inline" if (media_type or OCTET_STREAM) in INLINE_TYPES else "attachment"
    name = sanitise_filename(filename)
    if name is None:
        return kind
    if all(32 <= ord(c) < 127 for c in name):
        return f'{kind}; filename="{name}"'
    return f"{kind}; filename*=utf-8''{quote(name, safe='')}"


def filename_from_disposition(header: str | None) -> str | None:
    """The file name of a Content-Disposition header (remote media), sanitised."""
    if not header:
        return None
    from urllib.parse import unquote

    star = re.search(r"filename\*\s*=\s*(?:utf-8|UTF-8)''([^;]+)", header)
    if star:
        return sanitise_filename(unquote(star.group(1).strip()))
    plain = re.search(r'filename\s*=\s*("([^"]*)"|[^;]+)', header)
    if plain:
        return sanitise_filename(plain.group(2) if plain.group(2) is not None
                                 else plain.group(1).strip())
    return None
