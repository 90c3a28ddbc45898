"""POST /register (with m.login.dummy UIA) and GET /register/available."""

from __future__ import annotations

from roost.client_api.accounts import Accounts
from roost.client_api.appservice import AppServices, register_as_user
from roost.client_api.errors import MatrixError, forbidden
from roost.client_api.login import device_id_from, optional_str
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.tokens import TokenAuthority
from roost.client_api.uia import UserInteractiveAuth


def register(
    router: Router,
    accounts: Accounts,
    tokens: TokenAuthority,
    uia: UserInteractiveAuth,
    registration_enabled: bool,
    appservices: AppServices | None = None,
) -> None:
    """`appservices`: registration by application services, and their exclusive names."""
    async def post_register(req: ApiRequest) -> JsonDict:
        if appservices is not None:
            body = req.json(required=False)
            if body.get("type") == "m.login.application_service":
                return await register_as_user(appservices, accounts, tokens, req, body)
        if req.arg("kind", "user") != "user":
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled")
        if not registration_enabled:
            raise forbidden("Registration has been disabled")
        body = req.json()
        username = optional_str(body, "username")
        password = optional_str(body, "password")
        user_id = accounts.user_id_for(username) if username else None
        if user_id is not None:
            if appservices is not None:
                appservices.check_user_free(user_id)
            await accounts.check_available(user_id)
        if password is None:
            raise MatrixError(400, "M_MISSING_PARAM", "missing parameter: password")
        await uia.require_dummy(body)
        user_id = await accounts.create(user_id or await accounts.generate_user_id(), password)
        if body.get("inhibit_login") is True:
            return {"user_id": user_id}
        issued = await tokens.issue(
            user_id,
            device_id_from(body),
            is_admin=False,
            want_refresh=body.get("refresh_token") is True,
            display_name=optional_str(body, "initial_device_display_name"),
        )
        return issued.to_json()

    async def available(req: ApiRequest) -> JsonDict:
        username = req.arg("username")
        if not username:
            raise MatrixError(400, "M_MISSING_PARAM", "missing parameter: username")
        await accounts.check_available(accounts.user_id_for(username))
        return {"available": True}

    router.add("POST", f"{CLIENT_PREFIX}/register", post_register, auth=False,
               rate_limit="registration")
    router.add("GET", f"{CLIENT_PREFIX}/register/available", available, auth=False,
               rate_limit="registration")


