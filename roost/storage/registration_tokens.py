"""Registration tokens: made by admins (the CLI, later the admin API), spent by /register.

A token is valid while it has uses left and has not expired. A use is spent
by `UserStore.create_user` in the transaction that creates the account
(`spend_token` below), so two registrations racing for a token's last use
cannot both succeed.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

from roost.storage.database import Database, Txn

TOKEN_ALPHABET = string.ascii_letters + string.digits + "._~-"
MAX_TOKEN_LENGTH = 64


@dataclass(frozen=True)
class RegistrationToken:
    token: str
    uses_allowed: int | None
    completed: int
    expiry_time: int | None
    created_ts: int


class TokenExistsError(Exception):
    """A token with that value exists already."""


def valid_token_text(token: str) -> bool:
    """The spec's grammar for registration tokens: [A-Za-z0-9._~-], at most 64 characters."""
    return 0 < len(token) <= MAX_TOKEN_LENGTH and all(c in TOKEN_ALPHABET for c in token)


def spend_token(txn: Txn, token: str, now_ms: int) -> bool:
    """Count one use of `token` if it is valid now; False (nothing changed) if not."""
    txn.execute(
        "UPDATE registration_tokens SET completed = completed + 1"
        " WHERE token = %s AND (uses_allowed IS NULL OR completed < uses_allowed)"
        " AND (expiry_time IS NULL OR expiry_time > %s)",
        (token, now_ms),
    )
    return txn.rowcount == 1


class RegistrationTokenStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, token: str | None, uses_allowed: int | None, expiry_time: int | None,
                     now_ms: int, length: int = 16) -> RegistrationToken:
        """Store a new token (a random one of `length` characters when `token` is None)."""
        chosen = token or "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(length))

        def txn_fn(txn: Txn) -> bool:
            txn.execute(
                "INSERT INTO registration_tokens (token, uses_allowed, expiry_time, created_ts)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (token) DO NOTHING",
                (chosen, uses_allowed, expiry_time, now_ms),
            )
            return txn.rowcount == 1

        if not await self._db.run("create_registration_token", txn_fn):
            raise TokenExistsError(chosen)
        return RegistrationToken(chosen, uses_allowed, 0, expiry_time, now_ms)

    async def get(self, token: str) -> RegistrationToken | None:
        row = await self._db.run(
            "get_registration_token",
            lambda t: t.query_one(
                "SELECT token, uses_allowed, completed, expiry_time, created_ts"
                " FROM registration_tokens WHERE token = %s", (token,)),
        )
        return RegistrationToken(*row) if row else None

    async def list(self) -> list[RegistrationToken]:
        rows = await self._db.run(
            "list_registration_tokens",
            lambda t: t.query(
                "SELECT token, uses_allowed, completed, expiry_time, created_ts"
                " FROM registration_tokens ORDER BY created_ts, token"),
        )
        return [RegistrationToken(*r) for r in rows]

    async def update(self, token: str, uses_allowed: int | None, expiry_time: int | None) -> bool:
        """Replace a token's limits; False if there is no such token."""

        def txn_fn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE registration_tokens SET uses_allowed = %s, expiry_time = %s"
                " WHERE token = %s", (uses_allowed, expiry_time, token))
            return txn.rowcount == 1

        return bool(await self._db.run("update_registration_token", txn_fn))

    async def delete(self, token: str) -> bool:
        def txn_fn(txn: Txn) -> bool:
            txn.execute("DELETE FROM registration_tokens WHERE token = %s", (token,))
            return txn.rowcount == 1

        return bool(await self._db.run("delete_registration_token", txn_fn))

    async def is_valid(self, token: str, now_ms: int) -> bool:
        found = await self.get(token)
        return found is not None and usable(found, now_ms)


def usable(token: RegistrationToken, now_ms: int) -> bool:
    """Uses left and not expired: what /register and the admin list's `valid` mean."""
    return ((token.uses_allowed is None or token.completed < token.uses_allowed)
            and (token.expiry_time is None or token.expiry_time > now_ms))
