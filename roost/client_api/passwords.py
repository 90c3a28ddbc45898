"""Password hashing with bcrypt, on a worker thread.

bcrypt is slow on purpose (a quarter of a second at the default cost), so it
must never run on the reactor thread, where it would stall every request.
"""

from __future__ import annotations

from typing import Any

import bcrypt
from twisted.internet import threads

# bcrypt only looks at the first 72 bytes; longer passwords are refused rather
# than silently truncated.
MAX_PASSWORD_BYTES = 72


class PasswordHasher:
    def __init__(self, reactor: Any, rounds: int) -> None:
        self._reactor = reactor
        self._rounds = rounds

    async def hash(self, password: str) -> str:
        data = password.encode("utf-8")
        return await threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), self._hash_sync, data
        )

    async def check(self, password: str, password_hash: str | None) -> bool:
        """True if `password` matches; a missing hash (deactivated, no password) never matches."""
        if not password_hash:
            return False
        data = password.encode("utf-8")
        if len(data) > MAX_PASSWORD_BYTES:
            return False
        return await threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), bcrypt.checkpw, data,
            password_hash.encode("ascii"),
        )

    def _hash_sync(self, data: bytes) -> str:
        return bcrypt.hashpw(data, bcrypt.gensalt(self._rounds)).decode("ascii")
