"""GET/POST /login, POST /refresh, POST /logout and /logout/all."""

from __future__ import annotations

import secrets
import string
from typing import TYPE_CHECKING, Any

from roost.client_api.accounts import Accounts
from roost.client_api.errors import MatrixError, bad_json, forbidden
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.tokens import TokenAuthority
from roost.storage.accounts import UserRecord
from roost.storage.devices import DeviceStore

MAX_DEVICE_ID_LENGTH = 255


def optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_json(f"{key} must be a string")
    return value


def device_id_from(body: dict[str, Any]) -> str:
    """The client's chosen device id, or a new one."""
    device_id = optional_str(body, "device_id")
    if device_id is None:
        return "".join(secrets.choice(string.ascii_uppercase) for _ in range(10))
    if not device_id or len(device_id) > MAX_DEVICE_ID_LENGTH:
        raise MatrixError(400, "M_INVALID_PARAM", "device_id must be 1 to 255 characters")
    return device_id


if TYPE_CHECKING:  # appservice.py uses this module's helpers
    from roost.client_api.appservice import AppServices
    from roost.client_api.login_tokens import LoginTokens


def register(router: Router, accounts: Accounts, tokens: TokenAuthority, devices: DeviceStore,
             appservices: AppServices | None = None,
             login_tokens: LoginTokens | None = None) -> None:
    """`appservices`: `m.login.application_service` for the services' own users;
    `login_tokens`: `m.login.token` with the tokens of /login/get_token."""
    async def login_flows(req: ApiRequest) -> JsonDict:
        flows: list[JsonDict] = [{"type": "m.login.password"}]
        if login_tokens is not None:
            flows.append({"type": "m.login.token", "get_login_token": True})
        if appservices is not None and appservices.services:
            flows.append({"type": "m.login.application_service"})
        return {"flows": flows}

    async def login(req: ApiRequest) -> JsonDict:
        body = req.json()
        if body.get("type") == "m.login.application_service" and appservices is not None:
            return await appservices.login_as_user(accounts, tokens, req, body)
        if body.get("type") == "m.login.token" and login_tokens is not None:
            user = await _token_user(body)
        elif body.get("type") != "m.login.password":
            raise MatrixError(400, "M_UNKNOWN", "Unknown login type")
        else:
            user = await _password_user(body)
        issued = await tokens.issue(
            user.user_id,
            device_id_from(body),
            is_admin=user.is_admin,
            want_refresh=body.get("refresh_token") is True,
            display_name=optional_str(body, "initial_device_display_name"),
        )
        result = issued.to_json()
        result["home_server"] = accounts.server_name
        return result

    async def _token_user(body: JsonDict) -> UserRecord:
        token = optional_str(body, "token")
        if not token:
            raise MatrixError(400, "M_MISSING_PARAM", "missing parameter: token")
        assert login_tokens is not None
        user_id = await login_tokens.take(token)
        user = await accounts.users.get_user(user_id) if user_id is not None else None
        if user is None or user.deactivated:
            raise forbidden("Invalid login token")
        return user

    async def _password_user(body: JsonDict) -> UserRecord:
        name = _login_name(body)
        password = optional_str(body, "password")
        if password is None:
            raise MatrixError(400, "M_MISSING_PARAM", "missing parameter: password")
        user_id = accounts.resolve_login_name(name)
        user = await accounts.check_password(user_id, password)
        if user is None:
            if (record := await accounts.users.get_user(user_id)) and record.deactivated:
                raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
            raise forbidden("Invalid username or password")
        return user

    async def refresh(req: ApiRequest) -> JsonDict:
        token = optional_str(req.json(), "refresh_token")
        if token is None:
            raise MatrixError(400, "M_MISSING_PARAM", "missing parameter: refresh_token")
        issued = await tokens.refresh(token, accounts.is_admin)
        return {
            "access_token": issued.access_token,
            "refresh_token": issued.refresh_token,
            "expires_in_ms": issued.expires_in_ms,
        }

    async def logout(req: ApiRequest) -> JsonDict:
        await tokens.revoke(req.user.session_id, delete_device=True)
        return {}

    async def logout_all(req: ApiRequest) -> JsonDict:
        ended = await devices.delete_devices(req.user.user_id, None)
        tokens.forget(ended)
        tokens.forget_user(req.user.user_id)
        return {}

    router.add("GET", f"{CLIENT_PREFIX}/login", login_flows, auth=False)
    router.add("POST", f"{CLIENT_PREFIX}/login", login, auth=False, rate_limit="login")
    router.add("POST", f"{CLIENT_PREFIX}/refresh", refresh, auth=False, rate_limit="login")
    router.add("POST", f"{CLIENT_PREFIX}/logout", logout)
    router.add("POST", f"{CLIENT_PREFIX}/logout/all", logout_all)


def _login_name(body: dict[str, Any]) -> str:
    identifier = body.get("identifier")
    if identifier is None:
        legacy = optional_str(body, "user")
        if legacy is None:
            raise MatrixError(400, "M_MISSING_PARAM", "missing parameter: identifier")
        return legacy
    if not isinstance(identifier, dict):
        raise bad_json("identifier must be an object")
    if identifier.get("type") != "m.id.user":
        raise MatrixError(400, "M_UNKNOWN", "Only m.id.user identifiers are supported")
    user = identifier.get("user")
    if not isinstance(user, str) or not user:
        raise MatrixError(400, "M_MISSING_PARAM", "missing parameter: identifier.user")
    return user
