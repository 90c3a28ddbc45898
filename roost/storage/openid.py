"""OpenID tokens: minted for a user, looked up by the server they are shown to."""

from __future__ import annotations

from roost.storage.database import Database, Txn


class OpenIdStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, token: str, user_id: str, expires_ts: int, now_ms: int) -> None:
        """Store a token; expired ones are swept in the same transaction."""

        def txn_fn(txn: Txn) -> None:
            txn.execute("DELETE FROM openid_tokens WHERE expires_ts <= %s", (now_ms,))
            txn.execute(
                "INSERT INTO openid_tokens (token, user_id, expires_ts) VALUES (%s, %s, %s)"
                " ON CONFLICT (token) DO NOTHING", (token, user_id, expires_ts))

        await self._db.run("add_openid_token", txn_fn)

    async def user_for(self, token: str, now_ms: int) -> str | None:
        """The holder of a live token, or None (unknown or expired)."""
        row = await self._db.run(
            "openid_user",
            lambda t: t.query_one(
                "SELECT user_id FROM openid_tokens WHERE token = %s AND expires_ts > %s",
                (token, now_ms)),
        )
        return row[0] if row else None
