"""Single-use login tokens (m.login.token), stored as hashes."""

from __future__ import annotations

from roost.storage.database import Database, Txn


class LoginTokenStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, token_hash: str, user_id: str, expires_ts: int, now_ms: int) -> None:
        """Store a token; expired ones are swept in the same transaction."""

        def txn_fn(txn: Txn) -> None:
            txn.execute("DELETE FROM login_tokens WHERE expires_ts <= %s", (now_ms,))
            txn.execute("INSERT INTO login_tokens (token_hash, user_id, expires_ts)"
                        " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                        (token_hash, user_id, expires_ts))

        await self._db.run("add_login_token", txn_fn)

    async def take(self, token_hash: str, now_ms: int) -> str | None:
        """The token's user, deleting the token (a second use finds nothing); None when it
        is unknown, used or expired."""

        def txn_fn(txn: Txn) -> str | None:
            row = txn.query_one(
                "DELETE FROM login_tokens WHERE token_hash = %s RETURNING user_id, expires_ts",
                (token_hash,))
            return str(row[0]) if row is not None and int(row[1]) > now_ms else None

        return await self._db.run("take_login_token", txn_fn)
