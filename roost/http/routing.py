"""(method, path template) -> route, for routes of any shape.

A template is a regex with `{name}` placeholders, each matching one path
segment; its regex parts (alternations) must not span a "/". So a request can
only match templates with as many "/" as its path, and the table is indexed by
that count: trying every regex in turn was a measurable part of a send
(bench/send_messages.py).
"""

from __future__ import annotations

import re
from typing import Generic, Protocol, TypeVar
from urllib.parse import unquote

from roost.http.errors import MatrixError


class HasPattern(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def pattern(self) -> re.Pattern[str]: ...


R = TypeVar("R", bound=HasPattern)
MAX_FIXED_PATHS = 1024


def compile_template(path: str) -> re.Pattern[str]:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
    return re.compile(f"^{regex}$")


class RouteTable(Generic[R]):
    def __init__(self) -> None:
        self.routes: list[R] = []
        self._by_depth: dict[int, list[R]] = {}
        # (method, path) -> the route, for paths matched by a template without
        # placeholders (/sync, /versions, /keys/upload...): the paths long polls and
        # clients call most often. Bounded (a "." in a template matches any character).
        self._fixed: dict[tuple[str, str], R] = {}

    def insert(self, path: str, route: R) -> None:
        """`route.pattern` must be `compile_template(path)`."""
        self.routes.append(route)
        self._by_depth.setdefault(path.count("/"), []).append(route)
        self._fixed.clear()  # an earlier answer may no longer be the first match

    def match(self, method: str, path: str) -> tuple[R | None, dict[str, str], bool]:
        """(route, unquoted params, path_known); path_known tells 405 from 404.
        HEAD is answered by the GET route."""
        fixed = self._fixed.get((method, path))
        if fixed is not None:
            return fixed, {}, True
        path_known = False
        for route in self._by_depth.get(path.count("/"), ()):
            m = route.pattern.match(path)
            if not m:
                continue
            path_known = True
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                params = {k: unquote(v) for k, v in m.groupdict().items()}
                if not params:
                    if len(self._fixed) < MAX_FIXED_PATHS:
                        self._fixed[(method, path)] = route
                elif any("\x00" in v for v in params.values()):
                    raise MatrixError(400, "M_INVALID_PARAM", "NUL characters are not allowed")
                return route, params, True
        return None, {}, path_known
