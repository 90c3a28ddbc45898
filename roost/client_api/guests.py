"""What guest accounts may do: the part of the client API the spec opens to guests.

Guests (POST /register?kind=guest) get an access token but no password. The
spec's "Guest access" module lists the endpoints they may call: reading rooms
they are in, sending messages, joining and leaving (rooms whose
m.room.guest_access is can_join; checked in rooms.py), typing, receipts and
read markers, their devices, profile, presence, account data, to-device and
keys, and a few read-only lookups. Every other endpoint answers 403
M_GUEST_ACCESS_FORBIDDEN (resource.py asks `guest_may_call`).
"""

from __future__ import annotations

import re

from roost.client_api.errors import MatrixError

_S = r"[^/]+"
_ALLOWED: list[tuple[str, str]] = [
    ("GET", rf"/rooms/{_S}/(state|members|joined_members|messages|initialSync|timestamp_to_event)"),
    ("GET", rf"/rooms/{_S}/(state/{_S}(/{_S})?|context/{_S}|event/{_S})"),
    ("GET", rf"/rooms/{_S}/relations/{_S}(/{_S}){{0,2}}"),
    ("PUT", rf"/rooms/{_S}/send/m\.room\.message/{_S}"),
    ("POST", rf"/rooms/{_S}/(join|leave)"),
    ("POST", rf"/join/{_S}"),
    ("PUT", rf"/rooms/{_S}/typing/{_S}"),
    ("POST", rf"/rooms/{_S}/(receipt/{_S}/{_S}|read_markers)"),
    ("GET", r"/(sync|events|initialSync|joined_rooms|capabilities|pushrules/.*)"),
    ("GET", rf"/events/{_S}"),
    ("(GET|PUT)", rf"/presence/{_S}/status"),
    ("GET", rf"/profile/{_S}(/{_S})?"),
    ("PUT", rf"/profile/{_S}/displayname"),
    ("GET", r"/(account/whoami|devices|voip/turnServer|publicRooms)"),
    ("(GET|PUT)", rf"/devices/{_S}"),
    ("POST", r"/(publicRooms|logout|keys/(upload|query|claim))"),
    ("GET", r"/keys/changes"),
    ("PUT", rf"/sendToDevice/{_S}/{_S}"),
    ("(GET|PUT)", rf"/user/{_S}/(rooms/{_S}/)?account_data/{_S}"),
    ("(GET|POST)", rf"/user/{_S}/filter(/{_S})?"),
    ("GET", rf"/room_summary/{_S}"),  # open to anyone without a token, so to guests too
]
_PREFIX = r"/_matrix/client/(?:v3|r0|v1)"
_RULES = [(re.compile(f"^{m}$"), re.compile(f"^{_PREFIX}{p}$")) for m, p in _ALLOWED]
_RULES.append((re.compile("^GET$"), re.compile(
    rf"^/_matrix/client/unstable/im\.nheko\.summary/(summary/{_S}|rooms/{_S}/summary)$")))


def guest_may_call(method: str, path: str) -> bool:
    return any(m.match(method) and p.match(path) for m, p in _RULES)


def check_guest(method: str, path: str) -> None:
    if not guest_may_call(method, path):
        raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access not allowed")
