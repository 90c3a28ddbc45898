"""User-interactive authentication (the spec's UIA) for the endpoints that need it.

A first request without `auth` is answered 401 with the flows and a session
id; the client repeats the request with an `auth` dict naming a stage and the
session. Registration offers m.login.dummy, or m.login.registration_token when
the server asks for a token; destructive account actions (deleting devices,
changing the password, deactivating) ask for the account's password again.

A session is bound to the operation (method and path) and the parameters (the
body without `auth`) of the request that began it: a session begun to delete
device X cannot be used to delete device Y, and one begun for one set of
devices cannot delete another. The one exception is a session begun with an
empty body (clients ask `POST /register {}` for the flows before the user has
typed anything): the first request with parameters binds it.

Sessions live in memory for a few minutes: losing one on restart only makes
the client start the flow over.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IReactorTime

from roost.client_api.errors import MatrixError

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
REGISTRATION_TOKEN = "m.login.registration_token"
SESSION_LIFETIME_S = 600.0
MAX_SESSIONS = 10_000

# (user_id the password must belong to, password) -> ok?
PasswordCheck = Callable[[str, str], Awaitable[bool]]
# A stage's check: given the client's auth dict, the value to remember for the
# stage (the token presented, the user proven), or a MatrixError raised.
StageCheck = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass
class _Session:
    operation: str
    params: str | None  # fingerprint of the body without auth; None: not bound yet
    created: float
    completed: dict[str, Any] = field(default_factory=dict)


class UiaChallenge(MatrixError):
    """The 401 that asks for (more) stages: the flows, the session and the stages completed,
    with `errcode` and `error` only when an attempted stage failed (spec; clients such as
    Cinny and matrix-js-sdk read an errcode as a failed stage)."""

    def __init__(self, body: dict[str, Any], error: MatrixError | None = None) -> None:
        if error is None:
            super().__init__(401, "M_UNAUTHORIZED", "User-interactive authentication required",
                             **body)
        else:
            super().__init__(401, error.errcode, error.error, **body)
        self.failed = error is not None

    def to_json(self) -> dict[str, Any]:
        return super().to_json() if self.failed else dict(self.extra)


def _fingerprint(body: dict[str, Any]) -> str | None:
    params = {k: v for k, v in body.items() if k != "auth"}
    if not params:
        return None
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class UserInteractiveAuth:
    def __init__(self, clock: IReactorTime, check_password: PasswordCheck, server_name: str) -> None:
        self._clock = clock
        self._check_password = check_password
        self._server_name = server_name
        self._sessions: dict[str, _Session] = {}

    async def authenticate(self, operation: str, body: dict[str, Any], flows: list[list[str]],
                           checks: dict[str, StageCheck],
                           params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the UIA dance for `operation`; the completed stages' values once a flow is done.

        Raises the 401 challenge (flows, session, completed stages) until then, and 403 if
        the session belongs to another operation or other parameters. `params`, when given,
        are what the session is bound to instead of the body without `auth`.
        """
        fingerprint = _fingerprint(params if params is not None else body)
        auth = body.get("auth")
        if auth is None:
            raise self._challenge(flows, self._new_session(operation, fingerprint))
        if not isinstance(auth, dict):
            raise MatrixError(400, "M_BAD_JSON", "auth must be an object")
        session_id = auth.get("session")
        if session_id is None:
            session_id = self._new_session(operation, fingerprint)
        elif not isinstance(session_id, str):
            raise MatrixError(400, "M_BAD_JSON", "auth.session must be a string")
        session = self._live(session_id)
        if session is None:
            raise MatrixError(400, "M_INVALID_PARAM", "Unknown or expired UI-auth session")
        stage = auth.get("type")
        if stage is None and fingerprint is None and session.operation == operation:
            # {"auth": {"session": S}} alone: the client asks where the session stands.
            raise self._challenge(flows, session_id)
        if session.operation != operation or (
            session.params is not None and session.params != fingerprint
        ):
            raise MatrixError(403, "M_FORBIDDEN",
                              "Requested operation has changed during the UI authentication session")
        if session.params is None:
            session.params = fingerprint
        if stage is not None:
            allowed = {s for flow in flows if _prefix_done(flow, session.completed) for s in flow}
            if stage not in allowed or stage not in checks:
                raise self._challenge(flows, session_id, MatrixError(
                    401, "M_UNRECOGNIZED", f"Unknown or unexpected auth type {stage!r}"))
            try:
                session.completed[stage] = await checks[stage](auth)
            except MatrixError as e:
                raise self._challenge(flows, session_id, e) from None
        if any(all(s in session.completed for s in flow) for flow in flows):
            del self._sessions[session_id]
            return session.completed
        raise self._challenge(flows, session_id)

    async def require_dummy(self, operation: str, body: dict[str, Any]) -> None:
        async def dummy(_auth: dict[str, Any]) -> bool:
            return True

        await self.authenticate(operation, body, [[DUMMY]], {DUMMY: dummy})

    async def require_password(self, operation: str, body: dict[str, Any], user_id: str,
                               params: dict[str, Any] | None = None) -> None:
        """Re-authenticate the logged-in user with their password."""

        async def password(auth: dict[str, Any]) -> str:
            claimed = _identified_user(auth, self._server_name)
            given = auth.get("password")
            if not (claimed in (None, user_id) and isinstance(given, str)
                    and await self._check_password(user_id, given)):
                raise MatrixError(401, "M_FORBIDDEN", "Invalid password")
            return user_id

        await self.authenticate(operation, body, [[PASSWORD]], {PASSWORD: password}, params)

    def _challenge(self, flows: list[list[str]], session_id: str,
                   error: MatrixError | None = None) -> UiaChallenge:
        session = self._sessions.get(session_id)
        body: dict[str, Any] = {
            "flows": [{"stages": flow} for flow in flows],
            "params": {},
            "session": session_id,
        }
        if session is not None and session.completed:
            body["completed"] = sorted(session.completed)
        if error is not None:
            body.setdefault("completed", [])
        return UiaChallenge(body, error)

    def _live(self, session_id: str) -> _Session | None:
        session = self._sessions.get(session_id)
        if session is not None and self._clock.seconds() - session.created >= SESSION_LIFETIME_S:
            del self._sessions[session_id]
            return None
        return session

    def _new_session(self, operation: str, fingerprint: str | None) -> str:
        now = self._clock.seconds()
        if len(self._sessions) >= MAX_SESSIONS:
            self._sessions = {s: v for s, v in self._sessions.items()
                              if now - v.created < SESSION_LIFETIME_S}
            while len(self._sessions) >= MAX_SESSIONS:  # all young: drop the oldest
                del self._sessions[next(iter(self._sessions))]
        session_id = secrets.token_urlsafe(16)
        self._sessions[session_id] = _Session(operation, fingerprint, now)
        return session_id


def _prefix_done(flow: list[str], completed: dict[str, Any]) -> bool:
    """Whether `flow` is still possible: the stages done so far are all in it."""
    return all(stage in flow for stage in completed)


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
