"""The Matrix error: an errcode, a message and an HTTP status, raised anywhere in a handler."""

from __future__ import annotations

from typing import Any


class MatrixError(Exception):
    """An error the caller sees as `{"errcode": ..., "error": ...}` with `status`.

    `extra` fields go into the body beside errcode and error (retry_after_ms,
    room_version...); `headers` into the response (Retry-After).
    """

    def __init__(self, status: int, errcode: str, error: str, **extra: Any) -> None:
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.extra = extra
        self.headers: dict[str, str] = {}

    def to_json(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "error": self.error, **self.extra}
