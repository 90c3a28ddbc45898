"""Matrix errors: an errcode, a message and an HTTP status, raised anywhere in a handler."""

from __future__ import annotations

from typing import Any


class MatrixError(Exception):
    """An error a client sees as `{"errcode": ..., "error": ...}` with `status`."""

    def __init__(self, status: int, errcode: str, error: str, **extra: Any) -> None:
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.extra = extra
        self.headers: dict[str, str] = {}

    def to_json(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "error": self.error, **self.extra}


def forbidden(error: str) -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", error)


def bad_json(error: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", error)


def missing_param(name: str) -> MatrixError:
    return MatrixError(400, "M_MISSING_PARAM", f"missing parameter: {name}")


def invalid_param(error: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", error)


def not_found(error: str = "not found") -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", error)


def limit_exceeded(retry_after_ms: int) -> MatrixError:
    err = MatrixError(429, "M_LIMIT_EXCEEDED", "too many requests", retry_after_ms=retry_after_ms)
    err.headers["Retry-After"] = str(max(1, (retry_after_ms + 999) // 1000))
    return err
