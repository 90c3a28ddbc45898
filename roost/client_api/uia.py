"""User-interactive authentication (the spec's UIA) for the endpoints that need it.

A first request without `auth` is answered 401 with the flows and a session
id; the client repeats the request with an `auth` dict naming a stage.
Registration offers m.login.dummy; destructive account actions (deleting
devices, changing the password, deactivating) ask for the account's password
again. Sessions live in memory for a few minutes: losing one on restart only
makes the client start the flow over.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from roost.client_api.errors import MatrixError

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
SESSION_LIFETIME_S = 600.0
MAX_SESSIONS = 10_000

# (user_id the password must belong to, password) -> ok?
PasswordCheck = Callable[[str, str], Awaitable[bool]]


class UserInteractiveAuth:
    def __init__(self, clock: IReactorTime, check_password: PasswordCheck, server_name: str) -> None:
        self._clock = clock
        self._check_password = check_password
        self._server_name = server_name
        self._sessions: dict[str, float] = {}

    def _challenge(self, stage: str, session: str | None, error: MatrixError | None = None) -> MatrixError:
        session = session if session in self._sessions else self._new_session()
        body: dict[str, Any] = {"flows": [{"stages": [stage]}], "params": {}, "session": session}
        if error is None:
            return MatrixError(401, "M_FORBIDDEN", "User-interactive authentication required", **body)
        return MatrixError(401, error.errcode, error.error, **body, completed=[])

    def _new_session(self) -> str:
        now = self._clock.seconds()
        if len(self._sessions) >= MAX_SESSIONS:
            self._sessions = {s: t for s, t in self._sessions.items() if now - t < SESSION_LIFETIME_S}
        session = secrets.token_urlsafe(16)
        self._sessions[session] = now
        return session

    async def require_dummy(self, body: dict[str, Any]) -> None:
        """Registration: any client may complete the dummy stage."""
        auth = body.get("auth")
        if not isinstance(auth, dict):
            raise self._challenge(DUMMY, None)
        if auth.get("type") != DUMMY:
            raise self._challenge(
                DUMMY, auth.get("session"), MatrixError(401, "M_UNRECOGNIZED", "Unknown auth type")
            )
        self._sessions.pop(str(auth.get("session")), None)

    async def require_password(self, body: dict[str, Any], user_id: str) -> None:
        """Re-authenticate the logged-in user with their password."""
        auth = body.get("auth")
        if not isinstance(auth, dict):
            raise self._challenge(PASSWORD, None)
        session = auth.get("session")
        if auth.get("type") != PASSWORD:
            raise self._challenge(
                PASSWORD, session, MatrixError(401, "M_UNRECOGNIZED", "Unknown auth type")
            )
        claimed = _identified_user(auth, self._server_name)
        password = auth.get("password")
        ok = (
            claimed in (None, user_id)
            and isinstance(password, str)
            and await self._check_password(user_id, password)
        )
        if not ok:
            raise self._challenge(PASSWORD, session, MatrixError(401, "M_FORBIDDEN", "Invalid password"))
        self._sessions.pop(str(session), None)


def _identified_user(auth: dict[str, Any], server_name: str) -> str | None:
    """The user an auth dict names through `identifier` (or the legacy `user`), if any."""
    identifier = auth.get("identifier")
    name = None
    if isinstance(identifier, dict) and identifier.get("type") == "m.id.user":
        name = identifier.get("user")
    elif isinstance(auth.get("user"), str):
        name = auth["user"]
    if not isinstance(name, str):
        return None
    return name if name.startswith("@") else f"@{name.lower()}:{server_name}"
