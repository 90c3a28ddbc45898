"""POST /register (UIA with m.login.dummy or m.login.registration_token; guests, and
their upgrade to full accounts with `guest_access_token`),
GET /register/available and GET /register/m.login.registration_token/validity."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from roost.client_api.accounts import Accounts
from roost.client_api.appservice import AppServices, register_as_user
from roost.client_api.errors import MatrixError, bad_json, forbidden, missing_param
from roost.client_api.login import device_id_from, optional_str
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Requester, Router
from roost.client_api.tokens import TokenAuthority
from roost.client_api.uia import DUMMY, REGISTRATION_TOKEN, UserInteractiveAuth
from roost.storage.registration_tokens import RegistrationTokenStore


def register(
    router: Router,
    accounts: Accounts,
    tokens: TokenAuthority,
    uia: UserInteractiveAuth,
    registration_enabled: bool,
    registration_tokens: RegistrationTokenStore,
    clock: IReactorTime,
    *,
    require_token: bool = False,
    allow_guests: bool = False,
    appservices: AppServices | None = None,
) -> None:
    """`appservices`: registration by application services, and their exclusive names."""
    def now_ms() -> int:
        return int(clock.seconds() * 1000)

    async def dummy(_auth: dict[str, Any]) -> bool:
        return True

    async def registration_token(auth: dict[str, Any]) -> str:
        token = auth.get("token")
        if not isinstance(token, str):
            raise MatrixError(401, "M_MISSING_PARAM", "auth.token must be a string")
        if not await registration_tokens.is_valid(token, now_ms()):
            raise MatrixError(401, "M_FORBIDDEN", "Invalid registration token")
        return token

    flows = [[REGISTRATION_TOKEN]] if require_token else [[DUMMY]]
    checks = {REGISTRATION_TOKEN: registration_token} if require_token else {DUMMY: dummy}

    async def register_guest(req: ApiRequest) -> JsonDict:
        """A guest: every body field but the device's display name is ignored (the spec)."""
        if not allow_guests:
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled")
        body = req.json(required=False)
        display_name = optional_str(body, "initial_device_display_name")
        user_id = await accounts.create(await accounts.generate_user_id(), None, guest=True)
        issued = await tokens.issue(user_id, device_id_from({}), is_admin=False,
                                    want_refresh=False, display_name=display_name, is_guest=True)
        return issued.to_json()

    async def upgrading_guest(body: dict[str, Any], username: str | None) -> Requester | None:
        """The guest a `guest_access_token` names, upgrading to a full account: the username
        must be the guest's own localpart."""
        guest_token = optional_str(body, "guest_access_token")
        if guest_token is None:
            return None
        guest = await tokens.authenticate(guest_token)
        if not guest.is_guest:
            raise forbidden("guest_access_token is not a guest's token")
        if username is None or accounts.user_id_for(username) != guest.user_id:
            raise MatrixError(400, "M_INVALID_PARAM",
                              "username must be the guest's own localpart to upgrade it")
        return guest

    async def post_register(req: ApiRequest) -> JsonDict:
        if appservices is not None:
            as_body = req.json(required=False)
            if as_body.get("type") == "m.login.application_service":
                return await register_as_user(appservices, accounts, tokens, req, as_body)
        kind = req.arg("kind", "user")
        if kind == "guest":
            return await register_guest(req)
        if kind != "user":
            raise MatrixError(400, "M_INVALID_PARAM", "kind must be user or guest")
        if not registration_enabled:
            raise forbidden("Registration has been disabled")
        body = req.json()
        username = optional_str(body, "username")
        password = optional_str(body, "password")
        optional_str(body, "initial_device_display_name")
        for flag in ("inhibit_login", "refresh_token"):
            if flag in body and not isinstance(body[flag], bool):
                raise bad_json(f"{flag} must be a boolean")
        guest = await upgrading_guest(body, username)
        device_id = device_id_from(body) if guest is None or "device_id" in body \
            else guest.device_id
        user_id = accounts.user_id_for(username) if username else None
        if user_id is not None and guest is None:
            if appservices is not None:
                appservices.check_user_free(user_id)
            await accounts.check_available(user_id)
        auth = body.get("auth")
        if password is None and isinstance(auth, dict) and auth.get("type") is not None:
            raise missing_param("password")  # before the stage would be spent
        done = await uia.authenticate(f"{req.method} register", body, flows, checks)
        if password is None:
            raise missing_param("password")
        if guest is not None:
            await accounts.upgrade_guest(guest.user_id, password, done.get(REGISTRATION_TOKEN))
            await tokens.revoke(guest.session_id)  # its token says "guest"; a new one follows
            user_id = guest.user_id
        else:
            user_id = await accounts.create(user_id or await accounts.generate_user_id(),
                                            password,
                                            registration_token=done.get(REGISTRATION_TOKEN))
        if body.get("inhibit_login") is True:
            return {"user_id": user_id}
        issued = await tokens.issue(
            user_id,
            device_id,
            is_admin=False,
            want_refresh=body.get("refresh_token") is True,
            display_name=optional_str(body, "initial_device_display_name"),
        )
        return issued.to_json()

    async def available(req: ApiRequest) -> JsonDict:
        username = req.arg("username")
        if not username:
            raise missing_param("username")
        await accounts.check_available(accounts.user_id_for(username))
        return {"available": True}

    async def token_validity(req: ApiRequest) -> JsonDict:
        token = req.arg("token")
        if token is None:
            raise missing_param("token")
        if not registration_enabled:
            raise forbidden("Registration is not enabled on this homeserver.")
        return {"valid": await registration_tokens.is_valid(token, now_ms())}

    router.add("POST", f"{CLIENT_PREFIX}/register", post_register, auth=False,
               rate_limit="registration")
    router.add("GET", f"{CLIENT_PREFIX}/register/available", available, auth=False,
               rate_limit="registration")
    router.add("GET", f"{CLIENT_PREFIX}/register/m.login.registration_token/validity",
               token_validity, auth=False, rate_limit="registration")
