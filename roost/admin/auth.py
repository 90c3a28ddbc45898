"""Who may use the admin API: users whose admin flag is set in storage.

The flag is read from the users table on every admin request, never taken
from the access token, so revoking an admin's rights takes effect at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from roost.client_api.accounts import Accounts
from roost.client_api.errors import MatrixError, forbidden
from roost.client_api.resource import ApiRequest, Requester

ADMIN_PREFIX = "/_synapse/admin"


class AdminGate:
    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    async def require_admin(self, req: ApiRequest) -> Requester:
        """The requester, if an admin; 403 M_FORBIDDEN otherwise."""
        requester = req.user
        if not await self._accounts.is_admin(requester.user_id):
            raise forbidden("You are not a server admin")
        return requester

    def local_user(self, user_id: str) -> str:
        """A user id of this server, or 400: the admin API manages local accounts only."""
        if not user_id.startswith("@") or user_id.partition(":")[2] != self._accounts.server_name:
            raise MatrixError(400, "M_INVALID_PARAM", "Can only manage local users")
        return user_id


T = TypeVar("T")


def bind(target: T, handler: Callable[[T, ApiRequest], Awaitable[Any]]
         ) -> Callable[[ApiRequest], Awaitable[Any]]:
    """A route handler calling `handler(target, req)`: the admin modules keep one plain
    function per endpoint and bind them to their service object when registering."""

    async def call(req: ApiRequest) -> Any:
        return await handler(target, req)

    return call
