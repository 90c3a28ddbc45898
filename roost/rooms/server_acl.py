"""Server ACLs (spec: "Server Access Control Lists (ACLs) for rooms"), as a pure evaluator.

One `ServerAcl` is compiled per m.room.server_acl event and asked, for every
federation request that concerns the room and every PDU and EDU, whether the
origin may take part. The spec's order: an IP literal is refused unless
`allow_ip_literals`; a name matching a `deny` glob is refused; a name
matching an `allow` glob is allowed; anything else is refused. Names are
compared without their port, ignoring case; `*` matches any run of
characters and `?` one character.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any


def _glob(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _globs(value: Any) -> list[re.Pattern[str]]:
    """The string entries of a list (anything else is ignored, as if absent)."""
    if not isinstance(value, list):
        return []
    return [_glob(v) for v in value if isinstance(v, str)]


def host_of(server_name: str) -> str:
    """The server name without its port: `[::1]:8448` -> `[::1]`, `a.b:80` -> `a.b`."""
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name[:end + 1] if end != -1 else server_name
    return server_name.rsplit(":", 1)[0] if ":" in server_name else server_name


def is_ip_literal(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ServerAcl:
    """The compiled content of one m.room.server_acl event."""

    def __init__(self, content: Mapping[str, Any]) -> None:
        self._allow = _globs(content.get("allow"))
        self._deny = _globs(content.get("deny"))
        allow_ip = content.get("allow_ip_literals", True)
        self._allow_ip_literals = allow_ip if isinstance(allow_ip, bool) else True

    def allows(self, server_name: str) -> bool:
        host = host_of(server_name)
        if not self._allow_ip_literals and is_ip_literal(host):
            return False
        if any(p.fullmatch(host) for p in self._deny):
            return False
        return any(p.fullmatch(host) for p in self._allow)
