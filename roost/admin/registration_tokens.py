"""Registration tokens under /_synapse/admin/v1/registration_tokens: list, read, make,
change and delete them, as synapse-admin's token screen and scripts expect.

A token is spent in the transaction that creates the account (storage), so
`pending` is always 0 here: there is no reserved-but-unfinished state to report.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from roost.admin.auth import ADMIN_PREFIX, AdminGate
from roost.client_api.errors import MatrixError, invalid_param, not_found
from roost.client_api.resource import ApiRequest, JsonDict, Router
from roost.storage.registration_tokens import (
    MAX_TOKEN_LENGTH,
    RegistrationToken,
    RegistrationTokenStore,
    TokenExistsError,
    usable,
    valid_token_text,
)

PATH = f"{ADMIN_PREFIX}/v1/registration_tokens"


def _token_json(token: RegistrationToken) -> JsonDict:
    return {"token": token.token, "uses_allowed": token.uses_allowed, "pending": 0,
            "completed": token.completed, "expiry_time": token.expiry_time}


def _limit(body: JsonDict, name: str, default: Any) -> Any:
    """A non-negative integer or null (no limit); `default` when absent."""
    if name not in body:
        return default
    value = body[name]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid_param(f"{name} must be a non-negative integer or null")
    return value


class AdminRegistrationTokens:
    def __init__(self, gate: AdminGate, store: RegistrationTokenStore,
                 clock: IReactorTime) -> None:
        self.gate = gate
        self.store = store
        self.clock = clock

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    async def list_tokens(self, req: ApiRequest) -> JsonDict:
        await self.gate.require_admin(req)
        valid = req.arg("valid")
        if valid not in (None, "true", "false"):
            raise invalid_param("valid must be true or false")
        now = self.now_ms()
        tokens = await self.store.list()
        if valid is not None:
            tokens = [t for t in tokens if usable(t, now) == (valid == "true")]
        return {"registration_tokens": [_token_json(t) for t in tokens]}

    async def get_token(self, req: ApiRequest) -> JsonDict:
        await self.gate.require_admin(req)
        token = await self.store.get(req.params["token"])
        if token is None:
            raise not_found("No such registration token")
        return _token_json(token)

    async def new_token(self, req: ApiRequest) -> JsonDict:
        await self.gate.require_admin(req)
        body = req.json(required=False)
        text = body.get("token")
        if text is not None and (not isinstance(text, str) or not valid_token_text(text)):
            raise invalid_param(f"token must be 1-{MAX_TOKEN_LENGTH} characters of"
                                " A-Z, a-z, 0-9, '.', '_', '~' and '-'")
        length = body.get("length", 16)
        if isinstance(length, bool) or not isinstance(length, int) \
                or not 0 < length <= MAX_TOKEN_LENGTH:
            raise invalid_param(f"length must be an integer from 1 to {MAX_TOKEN_LENGTH}")
        uses = _limit(body, "uses_allowed", None)
        expiry = _limit(body, "expiry_time", None)
        if expiry is not None and expiry < self.now_ms():
            raise invalid_param("expiry_time must not be in the past")
        try:
            made = await self.store.create(text, uses, expiry, self.now_ms(), length)
        except TokenExistsError:
            raise MatrixError(400, "M_INVALID_PARAM", "That token exists already") from None
        return _token_json(made)

    async def update_token(self, req: ApiRequest) -> JsonDict:
        await self.gate.require_admin(req)
        existing = await self.store.get(req.params["token"])
        if existing is None:
            raise not_found("No such registration token")
        body = req.json()
        uses = _limit(body, "uses_allowed", existing.uses_allowed)
        expiry = _limit(body, "expiry_time", existing.expiry_time)
        if not await self.store.update(existing.token, uses, expiry):
            raise not_found("No such registration token")
        updated = await self.store.get(existing.token)
        if updated is None:
            raise not_found("No such registration token")
        return _token_json(updated)

    async def delete_token(self, req: ApiRequest) -> JsonDict:
        await self.gate.require_admin(req)
        if not await self.store.delete(req.params["token"]):
            raise not_found("No such registration token")
        return {}


def register(router: Router, tokens: AdminRegistrationTokens) -> None:
    router.add("GET", PATH, tokens.list_tokens)
    router.add("POST", f"{PATH}/new", tokens.new_token)
    router.add("GET", f"{PATH}/{{token}}", tokens.get_token)
    router.add("PUT", f"{PATH}/{{token}}", tokens.update_token)
    router.add("DELETE", f"{PATH}/{{token}}", tokens.delete_token)
