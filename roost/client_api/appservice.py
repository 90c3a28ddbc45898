"""The client API as application services use it: their token, acting as their users,
registering users in their namespace, exclusive namespaces, and the ping.

A request bearing a service's `as_token` acts as the service's bot, or as the
user named by `?user_id=` when that user is in the service's namespace and
exists (masquerading). Everyone else is kept out of exclusive namespaces:
nobody but the service may register such a user or create such an alias.
"""

from __future__ import annotations

from typing import Any

from roost.appservice.client import AppServiceHttp, PingError
from roost.appservice.registration import AppService
from roost.client_api.accounts import Accounts
from roost.client_api.errors import MatrixError, bad_json, forbidden, missing_param
from roost.client_api.login import device_id_from, optional_str
from roost.client_api.resource import ApiRequest, JsonDict, Requester, Router
from roost.client_api.tokens import TokenAuthority
from roost.storage.accounts import UserStore


def exclusive_error(what: str) -> MatrixError:
    return MatrixError(400, "M_EXCLUSIVE", f"{what} is reserved by an application service")


class AppServices:
    """The registered services, looked up by token, and the namespace rules across them."""

    def __init__(self, services: list[AppService]) -> None:
        self.services = services
        self._by_token = {s.as_token: s for s in services}
        self._by_id = {s.id: s for s in services}
        self.http: AppServiceHttp | None = None  # set once the services' client exists

    async def login_as_user(self, accounts: Accounts, tokens: TokenAuthority, req: ApiRequest,
                            body: JsonDict) -> JsonDict:
        return await login_as_user(self, accounts, tokens, req, body)

    async def query_user(self, user_id: str) -> bool:
        """Ask the services whose namespace holds `user_id` to create it; True if one did."""
        for service in self.services:
            if self.http is not None and service.interested_in_user(user_id) \
                    and await self.http.query_user(service, user_id):
                return True
        return False

    async def query_alias(self, alias: str) -> bool:
        """Ask the services whose namespace holds `alias` to create it; True if one did."""
        for service in self.services:
            if self.http is not None and service.interested_in_alias(alias) \
                    and await self.http.query_alias(service, alias):
                return True
        return False

    def by_token(self, token: str | None) -> AppService | None:
        return self._by_token.get(token) if token else None

    def by_id(self, as_id: str) -> AppService | None:
        return self._by_id.get(as_id)

    def check_user_free(self, user_id: str, requester_service: str | None = None) -> None:
        """M_EXCLUSIVE if another party than the owning service claims this user id."""
        for service in self.services:
            if service.id != requester_service and service.exclusive_user(user_id):
                raise exclusive_error(user_id)

    def check_alias_free(self, alias: str, requester_service: str | None = None) -> None:
        for service in self.services:
            if service.id != requester_service and service.exclusive_alias(alias):
                raise exclusive_error(alias)


class AppServiceAuth:
    """An Authenticator: a service's as_token first, then ordinary access tokens."""

    def __init__(self, services: AppServices, tokens: TokenAuthority, users: UserStore) -> None:
        self._services = services
        self._tokens = tokens
        self._users = users
        if not services._by_token:  # no service registered (fixed at start): no token is one
            self.known = tokens.known  # type: ignore[method-assign]

    def known(self, token: str) -> Requester | None:
        """An ordinary access token's requester from memory (TokenAuthority.known); None
        for a service's token or anything to look up: then `authenticate`."""
        if token and self._services._by_token.get(token) is not None:  # by_token, inline
            return None
        return self._tokens.known(token)

    async def authenticate(self, token: str, as_user: str | None = None) -> Requester:
        service = self._services.by_token(token)
        if service is None:
            return await self._tokens.authenticate(token)
        user_id = as_user or service.sender
        if not service.owns_user(user_id):
            raise forbidden("Application service cannot masquerade as this user")
        if user_id != service.sender and not await self._users.user_exists(user_id):
            raise forbidden("Application service has not registered this user")
        return Requester(user_id, f"AS_{service.id}", f"as:{service.id}",
                         app_service=service.id, unlimited=not service.rate_limited)


async def login_as_user(services: AppServices, accounts: Accounts, tokens: TokenAuthority,
                        req: ApiRequest, body: JsonDict) -> JsonDict:
    """POST /login with `type: m.login.application_service`: a device for one of its users."""
    service = services.by_token(_bearer(req))
    if service is None:
        raise MatrixError(401, "M_MISSING_TOKEN", "An application service token is required")
    identifier = body.get("identifier")
    name = identifier.get("user") if isinstance(identifier, dict) else body.get("user")
    if not isinstance(name, str):
        raise missing_param("identifier.user")
    user_id = accounts.resolve_login_name(name)
    if not service.owns_user(user_id):
        raise forbidden("The user is outside the application service's namespace")
    record = await accounts.users.get_user(user_id)
    if record is None or record.deactivated:
        raise forbidden("Unknown or deactivated user")
    issued = await tokens.issue(user_id, device_id_from(body), is_admin=record.is_admin,
                                want_refresh=body.get("refresh_token") is True,
                                display_name=optional_str(body, "initial_device_display_name"))
    result = issued.to_json()
    result["home_server"] = accounts.server_name
    return result


async def register_as_user(services: AppServices, accounts: Accounts, tokens: TokenAuthority,
                           req: ApiRequest, body: JsonDict) -> JsonDict:
    """POST /register with `type: m.login.application_service` and the service's token."""
    service = services.by_token(_bearer(req))
    if service is None:
        raise MatrixError(401, "M_MISSING_TOKEN", "An application service token is required")
    username = optional_str(body, "username")
    if username is None:
        raise missing_param("username")
    user_id = accounts.user_id_for(username)
    if not service.owns_user(user_id):
        raise exclusive_error(f"{user_id} is outside the service's namespace:")
    services.check_user_free(user_id, service.id)
    await accounts.check_available(user_id)
    await accounts.create(user_id, None)
    if body.get("inhibit_login") is True:
        return {"user_id": user_id}
    issued = await tokens.issue(user_id, device_id_from(body), is_admin=False,
                                want_refresh=body.get("refresh_token") is True,
                                display_name=optional_str(body, "initial_device_display_name"))
    return issued.to_json()


def _bearer(req: ApiRequest) -> str | None:
    header = req.http.getHeader("Authorization") or ""
    if header.startswith("Bearer "):
        return header[len("Bearer "):]
    return req.arg("access_token")


def register(router: Router, services: AppServices, http: AppServiceHttp) -> None:
    async def ping(req: ApiRequest) -> Any:
        as_id = req.params["appservice_id"]
        if req.user.app_service != as_id:
            raise forbidden("Only the application service itself may ping it")
        service = services.by_id(as_id)
        if service is None:
            raise forbidden("Unknown application service")
        txn = req.json(required=False).get("transaction_id")
        if txn is not None and not isinstance(txn, str):
            raise bad_json("transaction_id must be a string")
        try:
            return {"duration_ms": await http.ping(service, txn)}
        except PingError as e:
            raise MatrixError(e.status, e.errcode, e.error) from None

    router.add("POST", "/_matrix/client/v1/appservice/{appservice_id}/ping", ping)
