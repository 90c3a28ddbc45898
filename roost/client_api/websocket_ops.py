"""The requests a WebSocket accepts: each op becomes the REST call that serves it.

Dispatching through the REST router keeps one implementation of every
write: the socket gets the REST endpoint's validation, errcodes and rate
limits (docs/websocket.md lists the ops and their fields).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from roost.client_api.errors import invalid_param, missing_param
from roost.client_api.resource import JsonDict, Requester, path_quote

V3 = "/_matrix/client/v3"


def _text(frame: JsonDict, name: str, default: str | None = None) -> str:
    value = frame.get(name, default)
    if value is None:
        raise missing_param(name)
    if not isinstance(value, str) or not value:
        raise invalid_param(f"{name} must be a non-empty string")
    return value


def _fields(frame: JsonDict, *names: str) -> JsonDict:
    return {n: frame[n] for n in names if frame.get(n) is not None}


Call = tuple[str, str, Any]  # method, path, JSON body (None: no body)


def _send(f: JsonDict, who: Requester) -> Call:
    room, etype, txn = _text(f, "room_id"), _text(f, "type"), _text(f, "txn_id")
    path = f"{V3}/rooms/{path_quote(room)}/send/{path_quote(etype)}/{path_quote(txn)}"
    return "PUT", path, f.get("content")


def _typing(f: JsonDict, who: Requester) -> Call:
    path = f"{V3}/rooms/{path_quote(_text(f, 'room_id'))}/typing/{path_quote(who.user_id)}"
    return "PUT", path, _fields(f, "typing", "timeout")


def _receipt(f: JsonDict, who: Requester) -> Call:
    room, event = path_quote(_text(f, "room_id")), path_quote(_text(f, "event_id"))
    kind = path_quote(_text(f, "receipt_type", "m.read"))
    return "POST", f"{V3}/rooms/{room}/receipt/{kind}/{event}", _fields(f, "thread_id")


def _join(f: JsonDict, who: Requester) -> Call:
    target = path_quote(_text(f, "room_id_or_alias"))
    return "POST", f"{V3}/join/{target}", _fields(f, "reason")


def _leave(f: JsonDict, who: Requester) -> Call:
    return "POST", f"{V3}/rooms/{path_quote(_text(f, 'room_id'))}/leave", _fields(f, "reason")


def _presence(f: JsonDict, who: Requester) -> Call:
    path = f"{V3}/presence/{path_quote(who.user_id)}/status"
    return "PUT", path, _fields(f, "presence", "status_msg")


OPS: dict[str, Callable[[JsonDict, Requester], Call]] = {
    "send": _send, "typing": _typing, "receipt": _receipt,
    "join": _join, "leave": _leave, "presence": _presence,
}
