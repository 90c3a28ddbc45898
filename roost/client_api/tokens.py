"""Access and refresh tokens.

Access tokens are JWTs naming the user, device and login session, signed
with this server's token secret: checking one needs no database read. A
revoked session must be refused at once, so the token checker keeps the set
of live sessions in memory (loaded at start, kept current by every login and
logout in this process); a session it has not seen is looked up once.

Refresh tokens are opaque: `rt.<session>.<generation>.<secret>`. The session
row holds the hash of the current secret and its generation; each use moves
the generation on, so a token presented again after it was used is a reuse,
and a reuse revokes the whole session (someone else holds a copy).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt
from twisted.internet.interfaces import IReactorTime

from roost.client_api.errors import MatrixError
from roost.client_api.resource import Requester
from roost.storage.devices import DeviceStore, NewSession

_ALGORITHM = "HS256"
VERIFIED_CACHE_SIZE = 10_000
# Times are checked against the injected clock below, not pyjwt's wall clock.
_DECODE_OPTIONS = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}


@dataclass(frozen=True)
class IssuedTokens:
    user_id: str
    device_id: str
    access_token: str
    refresh_token: str | None
    expires_in_ms: int | None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "access_token": self.access_token,
        }
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
            body["expires_in_ms"] = self.expires_in_ms
        return body


def load_or_create_secret(path: str) -> bytes:
    """The HMAC key for access tokens, made at first start and kept in a 0600 file."""
    if os.path.exists(path):
        with open(path, "rb") as f:
            return f.read().strip()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    secret = secrets.token_urlsafe(48).encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret + b"\n")
    return secret


def unknown_token(soft_logout: bool = False) -> MatrixError:
    return MatrixError(401, "M_UNKNOWN_TOKEN", "Unrecognised access token", soft_logout=soft_logout)


class TokenAuthority:
    """Issues, checks, refreshes and revokes tokens; the client API's Authenticator."""

    def __init__(
        self,
        devices: DeviceStore,
        secret: bytes,
        clock: IReactorTime,
        access_lifetime_ms: int,
        refresh_lifetime_ms: int,
        admins: set[str] | None = None,
    ) -> None:
        self._devices = devices
        self._secret = secret
        self._clock = clock
        self._access_lifetime_ms = access_lifetime_ms
        self._refresh_lifetime_ms = refresh_lifetime_ms
        # session_id -> (user_id, device_id) of every live session known here.
        self._live: dict[str, tuple[str, str]] = {}
        # token -> its verified claims. pyjwt's decode costs about half a
        # millisecond, most of a message send (bench/send_messages.py), and a
        # client presents the same token on every request. Bounded; revocation
        # and expiry are still checked on every request below.
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def load(self) -> None:
        """Learn every live session, so that checking a token needs no database read."""
        for session_id, user_id, device_id in await self._devices.all_sessions():
            self._live[session_id] = (user_id, device_id)

    def _claims(self, token: str) -> dict[str, Any]:
        claims = self._verified.get(token)
        if claims is not None:
            self._verified.move_to_end(token)
            return claims
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[_ALGORITHM], options=_DECODE_OPTIONS
            )
            if not all(isinstance(claims.get(k), str) for k in ("sub", "dev", "sid")):
                raise KeyError("claims")
        except (jwt.InvalidTokenError, KeyError, TypeError):
            raise unknown_token() from None
        self._verified[token] = claims
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    async def authenticate(self, token: str, as_user: str | None = None) -> Requester:
        """`as_user` only means something for application service tokens (elsewhere)."""
        claims = self._claims(token)
        user_id, device_id, session_id = claims["sub"], claims["dev"], claims["sid"]
        exp = claims.get("exp")
        if exp is not None and self._clock.seconds() >= exp:
            raise unknown_token(soft_logout=True)
        if not await self._session_is_live(session_id, user_id, device_id):
            raise unknown_token()
        return Requester(user_id, device_id, session_id, bool(claims.get("adm")),
                         is_guest=bool(claims.get("gst")))

    async def _session_is_live(self, session_id: str, user_id: str, device_id: str) -> bool:
        known = self._live.get(session_id)
        if known is None:
            # A session started by another process, or one already revoked.
            record = await self._devices.get_session(session_id)
            if record is None:
                return False
            known = (record.user_id, record.device_id)
            self._live[session_id] = known
        return known == (user_id, device_id)

    async def issue(
        self,
        user_id: str,
        device_id: str,
        *,
        is_admin: bool,
        want_refresh: bool,
        display_name: str | None = None,
        is_guest: bool = False,
    ) -> IssuedTokens:
        """Start a login session on the device (replacing that device's older sessions)."""
        now = self._now_ms()
        session_id = secrets.token_urlsafe(12)
        secret = secrets.token_urlsafe(32) if want_refresh else None
        session = NewSession(
            session_id, user_id, device_id, now,
            _hash_secret(secret) if secret else None,
            now + self._refresh_lifetime_ms if secret else None,
        )
        replaced = await self._devices.start_session(session, display_name, replace_device_sessions=True)
        self.forget(replaced)
        self._live[session_id] = (user_id, device_id)
        return self._tokens(session_id, user_id, device_id, is_admin, secret, 0, is_guest)

    def _tokens(
        self, session_id: str, user_id: str, device_id: str, is_admin: bool,
        refresh_secret: str | None, generation: int, is_guest: bool = False,
    ) -> IssuedTokens:
        now_s = self._clock.seconds()
        claims: dict[str, Any] = {"sub": user_id, "dev": device_id, "sid": session_id,
                                  "iat": int(now_s), "jti": secrets.token_hex(6)}
        if is_admin:
            claims["adm"] = True
        if is_guest:
            claims["gst"] = True
        expires_in_ms = None
        refresh_token = None
        if refresh_secret is not None:
            expires_in_ms = self._access_lifetime_ms
            claims["exp"] = now_s + expires_in_ms / 1000
            refresh_token = f"rt.{session_id}.{generation}.{refresh_secret}"
        access = jwt.encode(claims, self._secret, algorithm=_ALGORITHM)
        return IssuedTokens(user_id, device_id, access, refresh_token, expires_in_ms)

    async def refresh(self, refresh_token: str, is_admin_of: Any) -> IssuedTokens:
        """Rotate a refresh token; a stale generation means reuse, which ends the session.

        `is_admin_of` is an async callable user_id -> bool, asked afresh so
        that a rotated access token carries the user's current admin flag.
        """
        parsed = _parse_refresh(refresh_token)
        if parsed is None:
            raise unknown_token()
        session_id, generation, secret = parsed
        record = await self._devices.get_session(session_id)
        if record is None or record.refresh_generation is None:
            raise unknown_token()
        if generation != record.refresh_generation:
            await self.revoke(session_id)
            raise unknown_token()
        if not hmac.compare_digest(_hash_secret(secret), record.refresh_secret_hash or ""):
            raise unknown_token()
        now = self._now_ms()
        if record.refresh_expires_ts is not None and now >= record.refresh_expires_ts:
            raise unknown_token(soft_logout=True)
        new_secret = secrets.token_urlsafe(32)
        rotated = await self._devices.rotate_refresh(
            session_id, generation, _hash_secret(new_secret), now + self._refresh_lifetime_ms
        )
        if not rotated:  # lost a race with another use of the same token: a reuse
            await self.revoke(session_id)
            raise unknown_token()
        admin = await is_admin_of(record.user_id)
        return self._tokens(
            session_id, record.user_id, record.device_id, admin, new_secret, generation + 1
        )

    async def revoke(self, session_id: str, delete_device: bool = False) -> None:
        self._live.pop(session_id, None)
        await self._devices.end_session(session_id, delete_device)

    def forget(self, session_ids: list[str]) -> None:
        """Drop sessions another store call ended (device deletion, deactivation)."""
        for session_id in session_ids:
            self._live.pop(session_id, None)

    def forget_user(self, user_id: str) -> None:
        for session_id in [s for s, (u, _d) in self._live.items() if u == user_id]:
            del self._live[session_id]


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _parse_refresh(token: str) -> tuple[str, int, str] | None:
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != "rt" or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2]), parts[3]
