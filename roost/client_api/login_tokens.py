"""POST /_matrix/client/v1/login/get_token, and the m.login.token login it enables.

A logged-in user proves their password again (UIA, every time: a UIA session
is spent by its one use) and gets a token valid for one login within two
minutes, for a new device to log in as them without typing the password.
Tokens are stored hashed; using one deletes it in the same statement, so two
logins cannot share it.
"""

from __future__ import annotations

import hashlib
import secrets

from twisted.internet.interfaces import IReactorTime

from roost.client_api.errors import MatrixError
from roost.client_api.resource import ApiRequest, JsonDict, Router
from roost.client_api.uia import UserInteractiveAuth
from roost.storage.login_tokens import LoginTokenStore

LIFETIME_MS = 120_000


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class LoginTokens:
    def __init__(self, store: LoginTokenStore, clock: IReactorTime) -> None:
        self._store = store
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def make(self, user_id: str) -> str:
        token = secrets.token_urlsafe(32)
        now = self._now_ms()
        await self._store.add(_hash(token), user_id, now + LIFETIME_MS, now)
        return token

    async def take(self, token: str) -> str | None:
        """The user a valid token logs in as; the token is spent."""
        return await self._store.take(_hash(token), self._now_ms())


def register(router: Router, login_tokens: LoginTokens, uia: UserInteractiveAuth) -> None:
    async def get_token(req: ApiRequest) -> JsonDict:
        if req.user.is_guest:
            raise MatrixError(400, "M_FORBIDDEN", "Guest accounts cannot make login tokens")
        body = req.json(required=False)
        await uia.require_password(f"{req.method} login/get_token", body, req.user.user_id)
        return {"login_token": await login_tokens.make(req.user.user_id),
                "expires_in_ms": LIFETIME_MS}

    router.add("POST", "/_matrix/client/v1/login/get_token", get_token, rate_limit="login")
