"""Shared-secret registration: GET/POST /_synapse/admin/v1/register.

`register_new_matrix_user` and provisioning scripts create accounts this way
while open registration is off. A nonce is handed out, then the caller proves
knowledge of `registration.shared_secret` with an HMAC-SHA1 over the nonce,
username, password, the admin flag (and the user type, when given), each
separated by a NUL byte. A nonce is good for one minute and one use.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from twisted.internet.interfaces import IReactorTime

from roost.admin.auth import ADMIN_PREFIX
from roost.client_api.accounts import Accounts
from roost.client_api.errors import MatrixError, bad_json, forbidden, missing_param
from roost.client_api.profile import Profiles
from roost.client_api.resource import ApiRequest, JsonDict, Router
from roost.client_api.tokens import TokenAuthority

NONCE_LIFETIME_S = 60.0
MAX_PENDING_NONCES = 10_000


class SharedSecretRegistration:
    def __init__(self, secret: str | None, accounts: Accounts, tokens: TokenAuthority,
                 profiles: Profiles, clock: IReactorTime) -> None:
        self._secret = secret.encode("utf-8") if secret else None
        self._accounts = accounts
        self._tokens = tokens
        self._profiles = profiles
        self._clock = clock
        self._nonces: dict[str, float] = {}

    def _require_enabled(self) -> bytes:
        if self._secret is None:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        return self._secret

    def new_nonce(self) -> str:
        self._require_enabled()
        now = self._clock.seconds()
        self._nonces = {n: t for n, t in self._nonces.items() if now - t < NONCE_LIFETIME_S}
        if len(self._nonces) >= MAX_PENDING_NONCES:
            raise MatrixError(429, "M_LIMIT_EXCEEDED", "Too many registrations in progress")
        nonce = secrets.token_hex(32)
        self._nonces[nonce] = now
        return nonce

    def _take_nonce(self, nonce: str) -> None:
        issued = self._nonces.pop(nonce, None)
        if issued is None or self._clock.seconds() - issued >= NONCE_LIFETIME_S:
            raise MatrixError(400, "M_UNKNOWN", "unrecognised nonce")

    async def register(self, body: JsonDict) -> JsonDict:
        secret = self._require_enabled()
        fields = {name: body.get(name) for name in ("nonce", "username", "password", "mac")}
        for name, value in fields.items():
            if value is None:
                raise missing_param(name)
            if not isinstance(value, str):
                raise bad_json(f"{name} must be a string")
        admin = body.get("admin", False)
        user_type = body.get("user_type")
        displayname = body.get("displayname")
        if not isinstance(admin, bool):
            raise bad_json("admin must be a boolean")
        if user_type is not None and not isinstance(user_type, str):
            raise bad_json("user_type must be a string")
        if displayname is not None and not isinstance(displayname, str):
            raise bad_json("displayname must be a string")
        self._take_nonce(fields["nonce"])
        expected = _mac(secret, fields["nonce"], fields["username"], fields["password"], admin,
                        user_type)
        if not hmac.compare_digest(expected, fields["mac"].encode("utf-8")):
            raise forbidden("HMAC incorrect")
        user_id = self._accounts.user_id_for(fields["username"])
        await self._accounts.check_available(user_id)
        await self._accounts.create(user_id, fields["password"], admin)
        await self._profiles.set_field(user_id, "displayname",
                                       displayname or user_id[1:].partition(":")[0])
        issued = await self._tokens.issue(user_id, secrets.token_hex(5).upper(), is_admin=admin,
                                          want_refresh=False)
        return {"user_id": user_id, "access_token": issued.access_token,
                "home_server": self._accounts.server_name, "device_id": issued.device_id}


def _mac(secret: bytes, nonce: str, username: str, password: str, admin: bool,
         user_type: str | None) -> bytes:
    parts = [nonce, username, password, "admin" if admin else "notadmin"]
    if user_type is not None:
        parts.append(user_type)
    digest = hmac.new(secret, b"\x00".join(p.encode("utf-8") for p in parts), hashlib.sha1)
    return digest.hexdigest().encode("ascii")


def register(router: Router, registration: SharedSecretRegistration) -> None:
    async def get_nonce(_req: ApiRequest) -> JsonDict:
        return {"nonce": registration.new_nonce()}

    async def post_register(req: ApiRequest) -> Any:
        return await registration.register(req.json())

    router.add("GET", f"{ADMIN_PREFIX}/v1/register", get_nonce, auth=False,
               rate_limit="registration")
    router.add("POST", f"{ADMIN_PREFIX}/v1/register", post_register, auth=False,
               rate_limit="registration")
