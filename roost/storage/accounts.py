"""The users table: who has an account, their password hash and admin flag."""

from __future__ import annotations

from dataclasses import dataclass

from roost.storage.database import Database, Txn


@dataclass(frozen=True)
class UserRecord:
    user_id: str
    password_hash: str | None
    is_admin: bool
    deactivated: bool
    created_ts: int


class UserExistsError(Exception):
    """The user id is already taken."""


class UserStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_user(
        self, user_id: str, password_hash: str | None, is_admin: bool, now_ms: int
    ) -> None:
        """Insert a user; UserExistsError if the id is taken (even by a deactivated user)."""

        def txn_fn(txn: Txn) -> bool:
            txn.execute(
                "INSERT INTO users (user_id, password_hash, is_admin, created_ts)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (user_id) DO NOTHING",
                (user_id, password_hash, is_admin, now_ms),
            )
            return txn.rowcount == 1

        if not await self._db.run("create_user", txn_fn):
            raise UserExistsError(user_id)

    async def get_user(self, user_id: str) -> UserRecord | None:
        row = await self._db.run(
            "get_user",
            lambda txn: txn.query_one(
                "SELECT user_id, password_hash, is_admin, deactivated, created_ts"
                " FROM users WHERE user_id = %s",
                (user_id,),
            ),
        )
        return UserRecord(*row) if row else None

    async def user_exists(self, user_id: str) -> bool:
        return await self.get_user(user_id) is not None

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        await self._db.run(
            "set_password_hash",
            lambda txn: txn.execute(
                "UPDATE users SET password_hash = %s WHERE user_id = %s", (password_hash, user_id)
            ),
        )

    async def deactivate(self, user_id: str) -> None:
        """Mark the account dead and drop its password, devices and sessions in one go."""

        def txn_fn(txn: Txn) -> None:
            txn.execute(
                "UPDATE users SET deactivated = TRUE, password_hash = NULL WHERE user_id = %s",
                (user_id,),
            )
            txn.execute("DELETE FROM devices WHERE user_id = %s", (user_id,))

        await self._db.run("deactivate_user", txn_fn)

    async def reactivate(self, user_id: str) -> None:
        """An admin brings a deactivated account back (it then needs a new password)."""
        await self._db.run("reactivate_user", lambda txn: txn.execute(
            "UPDATE users SET deactivated = FALSE WHERE user_id = %s", (user_id,)))
