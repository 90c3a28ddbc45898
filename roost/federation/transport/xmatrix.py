"""The X-Matrix Authorization header: how one server signs its requests to another.

The signed object is `{method, uri, origin, destination, content}` (content
only when there is a body); the header carries the origin, destination, key
id and signature. Parsing follows RFC 9110 section 11.4 as the spec asks
(case-insensitive names, quoted or bare values, backslash escapes, spaces
around commas), and, for older servers, accepts colons in bare values and a
missing destination.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from roost.keys.local import LocalKey
from roost.keys.remote import KeyRing, KeyVerificationError

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# What a bare value may hold: token characters, plus ':' for older servers
# and '/' and '=' because some send base64 signatures unquoted.
_BARE_VALUE_CHARS = _TOKEN_CHARS | frozenset(":/=")
_SERVER_NAME_RE = re.compile(r"^(\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Za-z.-]{1,255})(:\d{1,5})?$")


class XMatrixError(Exception):
    """A request whose X-Matrix authorization is missing, malformed or wrong."""


@dataclass(frozen=True)
class XMatrixAuth:
    origin: str
    destination: str | None
    key: str
    sig: str


def build_header(auth: XMatrixAuth) -> str:
    """The header value, in the form the spec recommends for older servers' sake."""
    params = [("origin", auth.origin)]
    if auth.destination is not None:
        params.append(("destination", auth.destination))
    params += [("key", auth.key), ("sig", auth.sig)]
    return "X-Matrix " + ",".join(f"{name}={_quote(value)}" for name, value in params)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_header(header: str) -> XMatrixAuth:
    """Parse one `X-Matrix ...` header value; XMatrixError if it is not one."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "x-matrix":
        raise XMatrixError("Authorization scheme is not X-Matrix")
    params = _parse_params(rest)
    missing = [name for name in ("origin", "key", "sig") if not params.get(name)]
    if missing:
        raise XMatrixError(f"X-Matrix header lacks {', '.join(missing)}")
    return XMatrixAuth(params["origin"], params.get("destination"), params["key"], params["sig"])


def _parse_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] in _TOKEN_CHARS:
            i += 1
        name = text[start:i].lower()
        if not name or i >= n or text[i] != "=":
            raise XMatrixError("malformed X-Matrix parameter")
        value, i = _parse_value(text, i + 1)
        if name in params:
            raise XMatrixError(f"X-Matrix parameter {name} given twice")
        params[name] = value
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] != ",":
            raise XMatrixError("X-Matrix parameters must be separated by commas")
    return params


def _parse_value(text: str, i: int) -> tuple[str, int]:
    """A quoted-string (unescaped) or a bare value starting at `i`; and where it ends."""
    n = len(text)
    if i < n and text[i] == '"':
        out = []
        i += 1
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n:
                i += 1
            out.append(text[i])
            i += 1
        if i >= n:
            raise XMatrixError("unterminated quoted value in X-Matrix header")
        return "".join(out), i + 1
    start = i
    while i < n and text[i] in _BARE_VALUE_CHARS:
        i += 1
    if i == start:
        raise XMatrixError("empty X-Matrix parameter value")
    return text[start:i], i


def request_json(method: str, uri: str, origin: str, destination: str,
                 content: Any | None) -> dict[str, Any]:
    """The object whose signature the header carries."""
    obj: dict[str, Any] = {"method": method, "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        obj["content"] = content
    return obj


def sign_request(local_key: LocalKey, method: str, uri: str, destination: str,
                 content: Any | None = None) -> str:
    """The Authorization header value for a request from this server to `destination`."""
    signed = local_key.sign_json(request_json(method, uri, local_key.server_name, destination, content))
    sig = signed["signatures"][local_key.server_name][local_key.key_id]
    return build_header(XMatrixAuth(local_key.server_name, destination, local_key.key_id, sig))


async def verify_request(
    keyring: KeyRing,
    headers: Sequence[str],
    method: str,
    uri: str,
    our_name: str,
    content: Any | None,
) -> str:
    """Check a request's X-Matrix headers against the origin's keys; return the origin.

    Several headers (one per key) may be sent; they must agree on the origin.
    The signature must hold now, so only current keys are accepted, never old ones.
    """
    auths = [parse_header(h) for h in headers if h.strip().lower().startswith("x-matrix")]
    if not auths:
        raise XMatrixError("missing X-Matrix Authorization header")
    origin = auths[0].origin
    if not _SERVER_NAME_RE.match(origin):
        raise XMatrixError(f"origin {origin!r} is not a server name")
    signatures: dict[str, str] = {}
    for auth in auths:
        if auth.origin != origin:
            raise XMatrixError("X-Matrix headers name different origins")
        if auth.destination is not None and auth.destination != our_name:
            raise XMatrixError(f"request is for {auth.destination}, not {our_name}")
        signatures[auth.key] = auth.sig
    obj = request_json(method, uri, origin, our_name, content)
    obj["signatures"] = {origin: signatures}
    try:
        await keyring.verify_json_for_server(origin, obj, keyring.now_ms())
    except KeyVerificationError as e:
        raise XMatrixError(f"signature check failed: {e.reason}") from None
    return origin
