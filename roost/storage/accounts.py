"""The users table: who has an account, their password hash, admin and guest flags."""

from __future__ import annotations

from dataclasses import dataclass

from roost.storage.database import Database, Txn
from roost.storage.registration_tokens import spend_token
from roost.storage.session_cache import SessionCache


@dataclass(frozen=True)
class UserRecord:
    user_id: str
    password_hash: str | None
    is_admin: bool
    deactivated: bool
    created_ts: int
    is_guest: bool = False


class UserExistsError(Exception):
    """The user id is already taken."""


class TokenSpentError(Exception):
    """The registration token has no use left (or expired) by the time the account was made."""


class UserStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_user(
        self, user_id: str, password_hash: str | None, is_admin: bool, now_ms: int,
        *, is_guest: bool = False, displayname: str | None = None,
        registration_token: str | None = None,
    ) -> None:
        """Insert a user, with its first display name and spending a registration token, all
        in one transaction; UserExistsError if the id is taken (even by a deactivated user),
        TokenSpentError if the token is no longer valid (then nothing is written)."""

        def txn_fn(txn: Txn) -> str | None:
            txn.execute(
                "INSERT INTO users (user_id, password_hash, is_admin, created_ts, is_guest)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id) DO NOTHING",
                (user_id, password_hash, is_admin, now_ms, is_guest),
            )
            if txn.rowcount != 1:
                return "exists"
            if registration_token is not None and not spend_token(txn, registration_token, now_ms):
                raise TokenSpentError(registration_token)  # rolls the insert back
            if displayname is not None:
                txn.execute("INSERT INTO profiles (user_id, displayname) VALUES (%s, %s)",
                            (user_id, displayname))
            return None

        if await self._db.run("create_user", txn_fn) == "exists":
            raise UserExistsError(user_id)

    async def upgrade_guest(self, user_id: str, password_hash: str, now_ms: int,
                            registration_token: str | None = None) -> bool:
        """Make a guest account a full one with a password (spending a registration token in
        the same transaction); False if it is not a guest (any more), TokenSpentError if the
        token is no longer valid (then nothing changes)."""

        def txn_fn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE users SET password_hash = %s, is_guest = FALSE"
                " WHERE user_id = %s AND is_guest AND NOT deactivated",
                (password_hash, user_id))
            if txn.rowcount != 1:
                return False
            if registration_token is not None and not spend_token(txn, registration_token, now_ms):
                raise TokenSpentError(registration_token)  # rolls the upgrade back
            return True

        return bool(await self._db.run("upgrade_guest", txn_fn))

    async def get_user(self, user_id: str) -> UserRecord | None:
        row = await self._db.run(
            "get_user",
            lambda txn: txn.query_one(
                "SELECT user_id, password_hash, is_admin, deactivated, created_ts, is_guest"
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
        await SessionCache.of(self._db).revoked([user_id])  # the sessions went with the devices

    async def reactivate(self, user_id: str) -> None:
        """An admin brings a deactivated account back (it then needs a new password)."""
        await self._db.run("reactivate_user", lambda txn: txn.execute(
            "UPDATE users SET deactivated = FALSE WHERE user_id = %s", (user_id,)))
