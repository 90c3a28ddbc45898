"""The Matrix errors client handlers raise most, by name (the error type is roost.http's)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from roost.http.errors import MatrixError
from roost.storage.stream_positions import WriterFenced

__all__ = ["MatrixError", "bad_json", "fenced_as_unavailable", "forbidden", "invalid_param",
           "limit_exceeded", "missing_param", "not_found"]


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


@contextmanager
def fenced_as_unavailable() -> Iterator[None]:
    """A stream write refused because the other processes passed this one (it was cut off
    from PostgreSQL; stream_positions.Fence): 503, try again (at another process: this
    one is stopping)."""
    try:
        yield
    except WriterFenced as e:
        raise MatrixError(503, "M_UNKNOWN", f"{e}; try again") from e
