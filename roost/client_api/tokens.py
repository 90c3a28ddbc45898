"""Access and refresh tokens.

Access tokens are JWTs naming the user, device and login session, signed
with this server's token secret (at least 32 characters, not a repeated
pattern, or Roost refuses to start). A revoked session must be refused at
once by every process on the database: each request checks its session (user,
device and the account's admin flag: rights come from storage, never from
inside a token) in the session cache, which every revocation empties in every
process before it answers (storage/session_cache.py), or reads its row.

Refresh tokens are `rt.<session>.<generation>.<nonce>.<mac>`, the mac an
HMAC of the rest under the token secret. The session row holds the hash of
the current token's secret part and its generation; each use moves the
generation on. A token whose mac does not verify is refused and changes
nothing (the session id is no secret: it is inside every access token). A
genuine token of an earlier generation is a reuse, and revokes the whole
session (someone else holds a copy).
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


MIN_SECRET_LENGTH = 32
MIN_DISTINCT_BYTES = 12


class WeakSecretError(ValueError):
    """The token secret file holds something anyone could guess: refuse to start."""


def check_secret(secret: bytes, path: str) -> bytes:
    if len(secret) < MIN_SECRET_LENGTH or len(set(secret)) < MIN_DISTINCT_BYTES:
        raise WeakSecretError(
            f"{path}: the token secret must be at least {MIN_SECRET_LENGTH} random characters"
            " (delete the file to have a new one made at start)")
    return secret


def load_or_create_secret(path: str) -> bytes:
    """The HMAC key for access tokens, made at first start and kept in a 0600 file; an
    existing file must hold a long random secret (WeakSecretError otherwise)."""
    if os.path.exists(path):
        with open(path, "rb") as f:
            return check_secret(f.read().strip(), path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    secret = secrets.token_urlsafe(48).encode("ascii")
    # Written whole, then linked into place: processes starting at once share the winner's.
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret + b"\n")
    try:
        os.link(tmp, path)
        return secret
    except FileExistsError:
        with open(path, "rb") as f:
            return check_secret(f.read().strip(), path)
    finally:
        os.unlink(tmp)


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
        # token -> its verified claims. pyjwt's decode costs about half a
        # millisecond, most of a message send (bench/send_messages.py), and a
        # client presents the same token on every request. Bounded; revocation
        # and expiry are still checked on every request below (the session in
        # storage/session_cache.py, emptied by every revocation before it answers).
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # token -> the Requester last made for it: a long poll comes back with the same
        # token several times a second, and the live session (checked on every request)
        # decides whether it still stands, so it is not built again each time.
        self._requesters: dict[str, Requester] = {}

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def load(self) -> None:
        """Nothing to warm: sessions are read and kept as requests come."""

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

    def known(self, token: str) -> Requester | None:
        """What `authenticate` would answer, when it can be decided from memory alone and
        is a Requester (a verified token, its live session held): no coroutine per
        request for the common case. None: ask `authenticate`, which also raises."""
        claims = self._verified.get(token)
        if claims is None:
            return None
        known = self._requesters.get(token)
        if known is None:
            return None
        exp = claims.get("exp")
        if exp is not None and self._clock.seconds() >= exp:
            return None
        live = self._devices.sessions.get(known.session_id)  # cached_session, inline
        if live is None or live[0] != known.user_id or live[1] != known.device_id \
                or live[2] != known.is_admin:
            return None
        self._verified.move_to_end(token)
        return known

    async def authenticate(self, token: str, as_user: str | None = None) -> Requester:
        """`as_user` only means something for application service tokens (elsewhere)."""
        claims = self._claims(token)
        user_id, device_id, session_id = claims["sub"], claims["dev"], claims["sid"]
        exp = claims.get("exp")
        if exp is not None and self._clock.seconds() >= exp:
            raise unknown_token(soft_logout=True)
        live = self._devices.cached_session(session_id)
        if live is None:
            live = await self._devices.session_auth(session_id)
        if live is None or live[:2] != (user_id, device_id):
            self._verified.pop(token, None)
            self._requesters.pop(token, None)
            raise unknown_token()
        known = self._requesters.get(token)
        if known is not None and known.is_admin == live[2]:
            return known
        requester = Requester(user_id, device_id, session_id, live[2],
                              is_guest=bool(claims.get("gst")))
        if len(self._requesters) >= VERIFIED_CACHE_SIZE:
            self._requesters.clear()
        self._requesters[token] = requester
        return requester

    async def issue(
        self,
        user_id: str,
        device_id: str,
        *,
        want_refresh: bool,
        is_admin: bool = False,
        display_name: str | None = None,
        is_guest: bool = False,
    ) -> IssuedTokens:
        """Start a login session on the device (replacing that device's older sessions).

        `is_admin` is not put in the token: rights are read from storage on each request.
        """
        now = self._now_ms()
        session_id = secrets.token_urlsafe(12)
        secret = self._refresh_secret(session_id, 0) if want_refresh else None
        session = NewSession(
            session_id, user_id, device_id, now,
            _hash_secret(secret) if secret else None,
            now + self._refresh_lifetime_ms if secret else None,
        )
        await self._devices.start_session(session, display_name, replace_device_sessions=True)
        return self._tokens(session_id, user_id, device_id, secret, 0, is_guest)

    def _mac(self, session_id: str, generation: int, nonce: str) -> str:
        message = f"rt.{session_id}.{generation}.{nonce}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    def _refresh_secret(self, session_id: str, generation: int) -> str:
        """`<nonce>.<mac>`: the part of a refresh token after its generation."""
        nonce = secrets.token_urlsafe(24)
        return f"{nonce}.{self._mac(session_id, generation, nonce)}"

    def _tokens(
        self, session_id: str, user_id: str, device_id: str,
        refresh_secret: str | None, generation: int, is_guest: bool = False,
    ) -> IssuedTokens:
        now_s = self._clock.seconds()
        claims: dict[str, Any] = {"sub": user_id, "dev": device_id, "sid": session_id,
                                  "iat": int(now_s), "jti": secrets.token_hex(6)}
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

    async def refresh(self, refresh_token: str, is_admin_of: Any = None) -> IssuedTokens:
        """Rotate a refresh token; a genuine token of an earlier generation is a reuse,
        which ends the session. A token this server did not make (its mac does not
        verify) is refused and changes nothing.

        `is_admin_of` is no longer used: the admin flag is read on every request.
        """
        parsed = _parse_refresh(refresh_token)
        if parsed is None:
            raise unknown_token()
        session_id, generation, nonce, mac = parsed
        if not hmac.compare_digest(mac, self._mac(session_id, generation, nonce)):
            raise unknown_token()
        secret = f"{nonce}.{mac}"
        record = await self._devices.get_session(session_id)
        if record is None or record.refresh_generation is None:
            raise unknown_token()
        if generation < record.refresh_generation:
            await self.revoke(session_id)
            raise unknown_token()
        if generation != record.refresh_generation or not hmac.compare_digest(
                _hash_secret(secret), record.refresh_secret_hash or ""):
            raise unknown_token()
        now = self._now_ms()
        if record.refresh_expires_ts is not None and now >= record.refresh_expires_ts:
            raise unknown_token(soft_logout=True)
        new_secret = self._refresh_secret(session_id, generation + 1)
        rotated = await self._devices.rotate_refresh(
            session_id, generation, _hash_secret(new_secret), now + self._refresh_lifetime_ms
        )
        if not rotated:  # lost a race with another use of the same token: a reuse
            await self.revoke(session_id)
            raise unknown_token()
        return self._tokens(session_id, record.user_id, record.device_id, new_secret,
                            generation + 1)

    async def revoke(self, session_id: str, delete_device: bool = False) -> None:
        await self._devices.end_session(session_id, delete_device)
        self.forget([session_id])

    def forget(self, session_ids: list[str]) -> None:
        """Drop the verified claims cached for sessions another store call ended (the
        database row is what refuses their tokens; this only frees the memory)."""
        ended = set(session_ids)
        for token in [t for t, c in self._verified.items() if c.get("sid") in ended]:
            del self._verified[token]

    def forget_user(self, user_id: str) -> None:
        for token in [t for t, c in self._verified.items() if c.get("sub") == user_id]:
            del self._verified[token]


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _parse_refresh(token: str) -> tuple[str, int, str, str] | None:
    """(session, generation, nonce, mac) of `rt.<session>.<generation>.<nonce>.<mac>`."""
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != "rt" or not parts[2].isdigit() or len(parts[2]) > 9:
        return None
    return parts[1], int(parts[2]), parts[3], parts[4]
