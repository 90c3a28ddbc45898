"""Accounts under /_synapse/admin: list, read, create or change, deactivate, reset
passwords, whois, joined rooms and devices, in the shapes operators' tools expect.

Every handler first asks the gate whether the requester is an admin (read
from storage). Changes go through the same account rules as the client API
(Accounts, the token authority, the deactivation hooks), so an admin cannot
create a user the client API would refuse, and a deactivated user leaves
their rooms exactly as a self-deactivation does.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from roost.admin.auth import ADMIN_PREFIX, AdminGate, bind
from roost.client_api.accounts import Accounts
from roost.client_api.errors import MatrixError, bad_json, invalid_param, missing_param, not_found
from roost.client_api.profile import Profiles
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.tokens import TokenAuthority
from roost.storage.admin_queries import USER_ORDER, AdminQueries, UserFilter, UserRow
from roost.storage.devices import DeviceRecord, DeviceStore

DeactivationHook = Callable[[str], Awaitable[None]]
MAX_PAGE = 1000


class AdminUsers:
    def __init__(self, gate: AdminGate, accounts: Accounts, queries: AdminQueries,
                 devices: DeviceStore, tokens: TokenAuthority, profiles: Profiles,
                 on_deactivate: list[DeactivationHook],
                 erase: DeactivationHook | None = None) -> None:
        self.gate = gate
        self.accounts = accounts
        self.queries = queries
        self.devices = devices
        self.tokens = tokens
        self.profiles = profiles
        self.on_deactivate = on_deactivate
        self.erase = erase  # records a user deactivated with erase: true (issue 15)

    async def user_json(self, user_id: str) -> JsonDict:
        row = await self.queries.get_user(user_id)
        if row is None:
            raise not_found("User not found")
        return _user_json(row)

    async def deactivate(self, user_id: str, erase: bool = False) -> None:
        """The same steps as POST /account/deactivate, on someone else's account."""
        await self.accounts.users.deactivate(user_id)
        self.tokens.forget_user(user_id)
        if erase and self.erase is not None:
            await self.erase(user_id)
        for hook in self.on_deactivate:
            await hook(user_id)

    async def logout_all(self, user_id: str) -> None:
        self.tokens.forget(await self.devices.end_other_sessions(user_id, None))


def _user_json(row: UserRow) -> JsonDict:
    body: JsonDict = {
        "name": row.user_id,
        "admin": row.is_admin,
        "deactivated": row.deactivated,
        "is_guest": False,
        "shadow_banned": False,
        "locked": False,
        "erased": False,
        "creation_ts": row.created_ts,
        "threepids": [],
        "external_ids": [],
    }
    if row.displayname is not None:
        body["displayname"] = row.displayname
    if row.avatar_url is not None:
        body["avatar_url"] = row.avatar_url
    return body


def _device_json(device: DeviceRecord, user_id: str) -> JsonDict:
    body: JsonDict = {"device_id": device.device_id, "user_id": user_id}
    for name in ("display_name", "last_seen_ts", "last_seen_ip"):
        value = getattr(device, name)
        if value is not None:
            body[name] = value
    return body


def page_args(req: ApiRequest) -> tuple[int, int, bool]:
    """(offset, limit, backwards) from `from`, `limit` and `dir`, validated and capped."""
    offset = req.int_arg("from", 0) or 0
    limit = req.int_arg("limit", 100)
    if offset < 0:
        raise invalid_param("from must not be negative")
    if limit is None or limit < 0:
        raise invalid_param("limit must not be negative")
    direction = req.arg("dir", "f")
    if direction not in ("f", "b"):
        raise invalid_param("dir must be f or b")
    return offset, min(limit, MAX_PAGE), direction == "b"


async def list_users(users: AdminUsers, req: ApiRequest) -> JsonDict:
    await users.gate.require_admin(req)
    offset, limit, backwards = page_args(req)
    order_by = req.arg("order_by", "name") or "name"
    if order_by not in USER_ORDER:
        raise invalid_param(f"order_by must be one of {', '.join(sorted(USER_ORDER))}")
    admins_arg = req.arg("admins")
    flt = UserFilter(name=req.arg("name"), user_id=req.arg("user_id"),
                     deactivated=req.bool_arg("deactivated", False),
                     admins=None if admins_arg is None else req.bool_arg("admins"))
    rows, total = await users.queries.list_users(flt, order_by, backwards, offset, limit)
    body: JsonDict = {"users": [_user_json(r) for r in rows], "total": total}
    if offset + len(rows) < total:
        body["next_token"] = str(offset + len(rows))
    return body


async def get_user(users: AdminUsers, req: ApiRequest) -> JsonDict:
    await users.gate.require_admin(req)
    return await users.user_json(users.gate.local_user(req.params["user_id"]))


def _optional(body: JsonDict, name: str, kind: type) -> Any:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise bad_json(f"{name} must be a {kind.__name__}")
    return value


async def put_user(users: AdminUsers, req: ApiRequest) -> tuple[int, JsonDict]:
    """Create the user (201) or change the fields given (200)."""
    requester = await users.gate.require_admin(req)
    user_id = users.gate.local_user(req.params["user_id"])
    body = req.json()
    password = _optional(body, "password", str)
    displayname = _optional(body, "displayname", str)
    avatar_url = _optional(body, "avatar_url", str)
    admin = _optional(body, "admin", bool)
    deactivated = _optional(body, "deactivated", bool)
    logout = _optional(body, "logout_devices", bool)
    existing = await users.queries.get_user(user_id)
    if existing is None:
        users.accounts.user_id_for(user_id)  # the username grammar, as /register applies it
        await users.accounts.create(user_id, password, bool(admin))
        await users.profiles.set_field(user_id, "displayname",
                                       displayname or user_id[1:].partition(":")[0])
        if avatar_url is not None:
            await users.profiles.set_field(user_id, "avatar_url", avatar_url)
        return 201, await users.user_json(user_id)
    if deactivated is False and existing.deactivated and password is None:
        raise invalid_param("Reactivating a user needs a password")
    if user_id == requester.user_id and admin is False:
        raise invalid_param("You may not demote yourself")
    if password is not None:
        await users.accounts.set_password(user_id, password)
        if logout is not False:
            await users.logout_all(user_id)
    if admin is not None:
        await users.queries.set_admin(user_id, admin)
    if displayname is not None:
        await users.profiles.set_field(user_id, "displayname", displayname)
    if avatar_url is not None:
        await users.profiles.set_field(user_id, "avatar_url", avatar_url)
    if deactivated is True and not existing.deactivated:
        await users.deactivate(user_id)
    elif deactivated is False and existing.deactivated:
        await users.accounts.users.reactivate(user_id)
    return 200, await users.user_json(user_id)


async def deactivate(users: AdminUsers, req: ApiRequest) -> JsonDict:
    await users.gate.require_admin(req)
    user_id = users.gate.local_user(req.params["user_id"])
    body = req.json(required=False)
    erase = _optional(body, "erase", bool)
    if await users.queries.get_user(user_id) is None:
        raise not_found("User not found")
    await users.deactivate(user_id, erase=erase is True)
    return {"id_server_unbind_result": "success"}


async def reset_password(users: AdminUsers, req: ApiRequest) -> JsonDict:
    await users.gate.require_admin(req)
    user_id = users.gate.local_user(req.params["user_id"])
    body = req.json()
    password = _optional(body, "new_password", str)
    if password is None:
        raise missing_param("new_password")
    logout = _optional(body, "logout_devices", bool)
    row = await users.queries.get_user(user_id)
    if row is None:
        raise not_found("User not found")
    if row.deactivated:
        raise MatrixError(400, "M_INVALID_PARAM", "The user is deactivated")
    await users.accounts.set_password(user_id, password)
    if logout is not False:
        await users.logout_all(user_id)
    return {}


async def whois(users: AdminUsers, req: ApiRequest) -> JsonDict:
    """Admins may ask about anyone; a user about themselves (the client API's rule)."""
    user_id = req.params["user_id"]
    if user_id != req.user.user_id:
        await users.gate.require_admin(req)
    if await users.queries.get_user(user_id) is None:
        raise not_found("User not found")
    devices = {}
    for device in await users.devices.list_devices(user_id):
        connection: JsonDict = {}
        if device.last_seen_ip is not None:
            connection["ip"] = device.last_seen_ip
        if device.last_seen_ts is not None:
            connection["last_seen"] = device.last_seen_ts
        devices[device.device_id] = {"sessions": [{"connections": [connection]}]}
    return {"user_id": user_id, "devices": devices}


async def joined_rooms(users: AdminUsers, req: ApiRequest) -> JsonDict:
    await users.gate.require_admin(req)
    rooms = await users.queries.joined_rooms(req.params["user_id"])
    return {"joined_rooms": rooms, "total": len(rooms)}


async def list_devices(users: AdminUsers, req: ApiRequest) -> JsonDict:
    await users.gate.require_admin(req)
    user_id = users.gate.local_user(req.params["user_id"])
    if await users.queries.get_user(user_id) is None:
        raise not_found("User not found")
    found = [_device_json(d, user_id) for d in await users.devices.list_devices(user_id)]
    return {"devices": found, "total": len(found)}


async def get_device(users: AdminUsers, req: ApiRequest) -> JsonDict:
    await users.gate.require_admin(req)
    user_id = users.gate.local_user(req.params["user_id"])
    device = await users.devices.get_device(user_id, req.params["device_id"])
    if device is None:
        raise not_found("Device not found")
    return _device_json(device, user_id)


async def put_device(users: AdminUsers, req: ApiRequest) -> JsonDict:
    await users.gate.require_admin(req)
    user_id = users.gate.local_user(req.params["user_id"])
    name = _optional(req.json(), "display_name", str)
    if not await users.devices.set_display_name(user_id, req.params["device_id"], name):
        raise not_found("Device not found")
    return {}


async def delete_device(users: AdminUsers, req: ApiRequest) -> JsonDict:
    await users.gate.require_admin(req)
    user_id = users.gate.local_user(req.params["user_id"])
    if await users.devices.get_device(user_id, req.params["device_id"]) is None:
        raise not_found("Device not found")
    users.tokens.forget(await users.devices.delete_devices(user_id, [req.params["device_id"]]))
    return {}


async def delete_devices(users: AdminUsers, req: ApiRequest) -> JsonDict:
    await users.gate.require_admin(req)
    user_id = users.gate.local_user(req.params["user_id"])
    ids = req.json().get("devices")
    if ids is None:
        raise missing_param("devices")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise bad_json("devices must be a list of device ids")
    users.tokens.forget(await users.devices.delete_devices(user_id, ids))
    return {}


def register(router: Router, users: AdminUsers) -> None:
    bound = functools.partial(bind, users)
    a = ADMIN_PREFIX
    router.add("GET", f"{a}/v2/users", bound(list_users))
    router.add("GET", f"{a}/v2/users/{{user_id}}", bound(get_user))
    router.add("PUT", f"{a}/v2/users/{{user_id}}", bound(put_user))
    router.add("POST", f"{a}/v1/deactivate/{{user_id}}", bound(deactivate))
    router.add("POST", f"{a}/v1/reset_password/{{user_id}}", bound(reset_password))
    router.add("GET", f"{a}/v1/whois/{{user_id}}", bound(whois))
    router.add("GET", f"{CLIENT_PREFIX}/admin/whois/{{user_id}}", bound(whois))
    router.add("GET", f"{a}/v1/users/{{user_id}}/joined_rooms", bound(joined_rooms))
    router.add("GET", f"{a}/v2/users/{{user_id}}/devices", bound(list_devices))
    router.add("POST", f"{a}/v2/users/{{user_id}}/delete_devices", bound(delete_devices))
    router.add("GET", f"{a}/v2/users/{{user_id}}/devices/{{device_id}}", bound(get_device))
    router.add("PUT", f"{a}/v2/users/{{user_id}}/devices/{{device_id}}", bound(put_device))
    router.add("DELETE", f"{a}/v2/users/{{user_id}}/devices/{{device_id}}",
               bound(delete_device))
