"""Request bodies and query arguments in, JSON answers out."""

from __future__ import annotations

import json
from typing import Any

import orjson
from twisted.web import server

from roost.http.answers import encode_headers
from roost.http.errors import MatrixError

# Deeper JSON is refused (M_BAD_JSON): no Matrix body nests anywhere near this, and
# walking or re-encoding deeper values costs recursion.
MAX_JSON_DEPTH = 400


def parse_json(raw: bytes | str) -> Any:
    """JSON as Matrix takes it: NaN and Infinity are not JSON; M_NOT_JSON for anything else
    that does not parse; M_BAD_JSON for nesting deeper than MAX_JSON_DEPTH or a NUL
    character anywhere (PostgreSQL cannot store one in text: refused before storage)."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise MatrixError(400, "M_BAD_JSON", "JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise MatrixError(400, "M_NOT_JSON", "Content not JSON.") from None
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH or b"\\u0000" in data:
        check_json_value(value)
    return value


def check_json_value(value: Any) -> None:
    """M_BAD_JSON for a value nested deeper than MAX_JSON_DEPTH or holding a NUL character
    in a string or key (iterative: a hostile value cannot exhaust the stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise MatrixError(400, "M_BAD_JSON", "NUL characters are not allowed")
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise MatrixError(400, "M_BAD_JSON", f"JSON nested deeper than {MAX_JSON_DEPTH}")
        if isinstance(item, dict):
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        else:
            stack.extend((v, depth + 1) for v in item)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_object(value: Any, required: bool = True) -> dict[str, Any]:
    """A parsed body (None: there was none) as the JSON object a handler wants."""
    if value is None:
        if required:
            raise MatrixError(400, "M_NOT_JSON", "Content not JSON.")
        return {}
    if not isinstance(value, dict):
        raise MatrixError(400, "M_BAD_JSON", "Content must be a JSON object.")
    return value


class QueryArgs:
    """Typed query arguments for a request object holding the Twisted request as `http`."""

    http: Any

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.http.args.get(name.encode())
        if not values:
            return default
        try:
            value = values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise MatrixError(400, "M_INVALID_PARAM", f"{name} is not UTF-8") from None
        if "\x00" in value:
            raise MatrixError(400, "M_INVALID_PARAM", f"{name} holds a NUL character")
        return value

    def args(self, name: str) -> list[str]:
        return [v.decode("utf-8", "replace") for v in self.http.args.get(name.encode(), [])]

    def int_arg(self, name: str, default: int | None = None) -> int | None:
        value = self.arg(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be an integer") from None

    def limit_arg(self, name: str, default: int, maximum: int, minimum: int = 0) -> int:
        """A count the caller asks for: below `minimum` (a negative one) is 400
        M_INVALID_PARAM, above `maximum` is served as `maximum` (spec: servers cap limits)."""
        value = self.int_arg(name, default)
        assert value is not None
        if value < minimum:
            raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be at least {minimum}")
        return min(value, maximum)

    def bool_arg(self, name: str, default: bool = False) -> bool:
        value = self.arg(name)
        if value is None:
            return default
        if value in ("true", "false"):
            return value == "true"
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be true or false")


class Answered:
    """What a handler returns when it has written its answer itself (a file, a
    multipart body) instead of giving JSON to write."""


ANSWERED = Answered()


def encode_json(body: Any) -> bytes:
    """`body` as compact UTF-8 JSON.

    orjson writes a big answer (2,000 member events: /members, an initial
    /sync) about ten times faster than the standard library (bench/big_room.py).
    What it refuses and json accepts (nesting past 254 levels, integers past
    64 bits) is written by json instead; non-string keys become strings as
    json makes them (a second try: orjson's option for them costs twice the
    time on every answer). `RawJson` parts are written as they are.
    """
    try:
        return orjson.dumps(body, default=_raw_fragment)
    except orjson.JSONEncodeError:
        pass
    try:  # non-string keys: an option that halves orjson's speed, so only when needed
        return orjson.dumps(body, default=_raw_fragment, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                          default=_raw_value).encode("utf-8")


class RawJson:
    """A part of an answer already encoded as JSON (UTF-8), written as it is.

    A big list whose items are kept encoded (the state events of /members or of an
    initial sync: event_format.client_events_json) is joined once instead of
    being built as thousands of dicts and encoded again on every request.
    """

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawJson) and other.raw == self.raw

    def __repr__(self) -> str:
        return f"RawJson({self.raw[:60]!r}...)"


def _raw_fragment(value: Any) -> orjson.Fragment:
    if isinstance(value, RawJson):
        return orjson.Fragment(value.raw)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _raw_value(value: Any) -> Any:
    """json's fallback reads a RawJson back (rare: an answer orjson refuses)."""
    if isinstance(value, RawJson):
        return json.loads(value.raw)
    raise TypeError(f"not JSON: {type(value).__name__}")


_JSON_HEAD = b"Content-Type: application/json\r\n"


def write_json(request: server.Request, status: int, body: Any,
               headers: dict[str, str] | None = None, head: bytes = b"") -> None:
    """Answer with `body` as compact UTF-8 JSON, unless the peer has gone already.
    `head`: constant header lines, pre-encoded (each ending in CRLF), such as CORS's."""
    if request.finished or request._disconnected:
        return
    if type(body) is RawJson:  # encoded already (a woken /sync's answer)
        payload = body.raw
    else:
        try:  # encode_json's usual case, inline
            payload = orjson.dumps(body, default=_raw_fragment)
        except orjson.JSONEncodeError:
            payload = encode_json(body)
    lines = _JSON_HEAD + head + encode_headers(headers) if headers else _JSON_HEAD + head
    answer = getattr(request, "answer", None)
    if answer is not None:  # roost.http.answers.FastRequest: one write
        answer(status, lines, payload)
        return
    request.setResponseCode(status)
    for line in lines.split(b"\r\n"):
        name, _, value = line.partition(b": ")
        if name:
            request.setHeader(name, value)
    request.setHeader(b"Content-Length", str(len(payload)).encode())
    if request.method != b"HEAD":
        request.write(payload)
    request.finish()
