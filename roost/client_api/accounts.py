"""Account rules shared by /register, /login, the account endpoints and the CLI.

The username grammar, password checks and user creation live here once, so
that `roost register-user` and `POST /register` cannot drift apart.
"""

from __future__ import annotations

import re
import secrets

from twisted.internet.interfaces import IReactorTime

from roost.client_api.errors import MatrixError
from roost.client_api.passwords import MAX_PASSWORD_BYTES, PasswordHasher
from roost.storage.accounts import TokenSpentError, UserExistsError, UserRecord, UserStore

# The spec's grammar for the localparts of new users (historical ones may be wider).
_LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/+]+$")
MAX_USER_ID_BYTES = 255


def invalid_username(error: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_USERNAME", error)


class Accounts:
    def __init__(
        self, users: UserStore, hasher: PasswordHasher, clock: IReactorTime, server_name: str
    ) -> None:
        self.users = users
        self._hasher = hasher
        self._clock = clock
        self.server_name = server_name

    def user_id_for(self, name: str) -> str:
        """A full user id from a localpart or a full id, checked against the grammar."""
        if name.startswith("@"):
            localpart, sep, server = name[1:].partition(":")
            if not sep or server != self.server_name:
                raise invalid_username(f"{name} is not a user of {self.server_name}")
        else:
            localpart = name
        if not localpart or not _LOCALPART_RE.match(localpart):
            raise invalid_username(
                "User ID may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'"
            )
        user_id = f"@{localpart}:{self.server_name}"
        if len(user_id.encode("utf-8")) > MAX_USER_ID_BYTES:
            raise invalid_username("User ID is too long")
        return user_id

    def resolve_login_name(self, name: str) -> str:
        """Login accepts any case for the localpart, as users type their names."""
        if name.startswith("@"):
            return name
        return f"@{name.lower()}:{self.server_name}"

    async def check_available(self, user_id: str) -> None:
        if await self.users.user_exists(user_id):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")

    async def generate_user_id(self) -> str:
        while True:
            user_id = f"@{secrets.randbelow(10**9):09d}:{self.server_name}"
            if not await self.users.user_exists(user_id):
                return user_id

    async def create(self, user_id: str, password: str | None, admin: bool = False, *,
                     guest: bool = False, registration_token: str | None = None) -> str:
        """Make the account; its display name starts as its localpart, as the spec asks."""
        password_hash = None
        if password is not None:
            check_password_allowed(password)
            password_hash = await self._hasher.hash(password)
        localpart = user_id[1:].partition(":")[0]
        try:
            await self.users.create_user(user_id, password_hash, admin, self._now_ms(),
                                         is_guest=guest, displayname=localpart,
                                         registration_token=registration_token)
        except UserExistsError:
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.") from None
        except TokenSpentError:
            raise MatrixError(401, "M_FORBIDDEN", "Registration token is no longer valid") from None
        return user_id

    async def upgrade_guest(self, user_id: str, password: str,
                            registration_token: str | None = None) -> None:
        """A guest account becomes a full one, keeping its id (spec: guest upgrade)."""
        check_password_allowed(password)
        password_hash = await self._hasher.hash(password)
        try:
            upgraded = await self.users.upgrade_guest(user_id, password_hash, self._now_ms(),
                                                      registration_token)
        except TokenSpentError:
            raise MatrixError(401, "M_FORBIDDEN", "Registration token is no longer valid") from None
        if not upgraded:
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")

    async def check_password(self, user_id: str, password: str) -> UserRecord | None:
        """The user, if the password is theirs and the account is usable."""
        user = await self.users.get_user(user_id)
        if user is None or user.deactivated:
            # Hash anyway so that a wrong name takes as long as a wrong password.
            await self._hasher.check(password, _DUMMY_HASH)
            return None
        if not await self._hasher.check(password, user.password_hash):
            return None
        return user

    async def set_password(self, user_id: str, password: str) -> None:
        check_password_allowed(password)
        await self.users.set_password_hash(user_id, await self._hasher.hash(password))

    async def is_admin(self, user_id: str) -> bool:
        user = await self.users.get_user(user_id)
        return bool(user and user.is_admin)

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)


def check_password_allowed(password: str) -> None:
    if not password:
        raise MatrixError(400, "M_WEAK_PASSWORD", "Password must not be empty")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise MatrixError(400, "M_INVALID_PARAM", f"Password is longer than {MAX_PASSWORD_BYTES} bytes")


# A real bcrypt hash of a random string, so missing users cost one check too.
_DUMMY_HASH = "$2b$04$Hf3T3O0w5yQ3B1n5mF6cxOWbY0Hn9GBtqQ2Q0yV4a9Vg3C7QzqS6e"
