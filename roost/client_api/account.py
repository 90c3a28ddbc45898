"""GET /account/whoami, POST /account/password, POST /account/deactivate."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from roost.client_api.accounts import Accounts
from roost.client_api.errors import MatrixError
from roost.client_api.login import optional_str
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.tokens import TokenAuthority
from roost.client_api.uia import UserInteractiveAuth
from roost.storage.devices import DeviceStore

# Called with the user id after an account is deactivated, so that rooms can
# make the user leave (set by wiring once rooms exist).
DeactivationHook = Callable[[str], Awaitable[None]]
# Called with (user id, device id) after a password change that ended the user's other
# sessions (push removes the pushers those devices made).
PasswordHook = Callable[[str, str], Awaitable[None]]


def register(
    router: Router,
    accounts: Accounts,
    tokens: TokenAuthority,
    devices: DeviceStore,
    uia: UserInteractiveAuth,
    on_deactivate: list[DeactivationHook],
    on_password_change: list[PasswordHook] | None = None,
    on_erase: list[DeactivationHook] | None = None,
) -> None:
    """``on_erase`` runs after deactivation when the body says ``erase: true``."""
    async def whoami(req: ApiRequest) -> JsonDict:
        return {"user_id": req.user.user_id, "device_id": req.user.device_id, "is_guest": req.user.is_guest}

    async def change_password(req: ApiRequest) -> JsonDict:
        body = req.json()
        new_password = optional_str(body, "new_password")
        if new_password is None:
            raise MatrixError(400, "M_MISSING_PARAM", "missing parameter: new_password")
        await uia.require_password(f"{req.method} {req.path}", body, req.user.user_id)
        await accounts.set_password(req.user.user_id, new_password)
        if body.get("logout_devices", True) is not False:
            ended = await devices.end_other_sessions(req.user.user_id, req.user.session_id)
            tokens.forget(ended)
            for hook in on_password_change or ():
                await hook(req.user.user_id, req.user.device_id)
        return {}

    async def deactivate(req: ApiRequest) -> JsonDict:
        body = req.json(required=False)
        erase = body.get("erase", False)
        if not isinstance(erase, bool):
            raise MatrixError(400, "M_INVALID_PARAM", "erase must be true or false")
        await uia.require_password(f"{req.method} {req.path}", body, req.user.user_id)
        await accounts.users.deactivate(req.user.user_id)
        tokens.forget_user(req.user.user_id)
        if erase:  # recorded first: what the leave hooks send must already be hidden
            for hook in on_erase or ():
                await hook(req.user.user_id)
        for hook in on_deactivate:
            await hook(req.user.user_id)
        return {"id_server_unbind_result": "no-support"}

    router.add("GET", f"{CLIENT_PREFIX}/account/whoami", whoami)
    router.add("POST", f"{CLIENT_PREFIX}/account/password", change_password)
    router.add("POST", f"{CLIENT_PREFIX}/account/deactivate", deactivate)
