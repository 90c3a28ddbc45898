"""GET /profile/{userId}, GET/PUT/DELETE /profile/{userId}/{keyName}.

Beyond displayname and avatar_url, a profile holds m.tz and custom fields
(namespaced keys, any JSON value), up to 64 KiB in all.

A user's display name and avatar also live in their m.room.member event of
every room, where other members read them; so a change here re-sends the
member event (membership join, the new profile) in each room the user is
joined to, through the room engine like any other event.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer

from roost.client_api.errors import MatrixError, forbidden, invalid_param, missing_param, not_found
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.federation.remote_queries import RemoteQueries
from roost.rooms.engine import NewEvent, RoomEngine, RoomError
from roost.storage.profiles import Profile, ProfileStore, ProfileTooLargeError
from roost.storage.room_state import RoomStateStore

logger = logging.getLogger(__name__)

# The limits Synapse applies, so that profiles move between servers unchanged.
MAX_DISPLAYNAME_LEN = 256
MAX_AVATAR_URL_LEN = 1000
FIELDS = ("displayname", "avatar_url")
# The spec's grammar of profile keys, and its limits on keys and whole profiles.
_KEY_RE = re.compile(r"^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$")
MAX_KEY_BYTES = 255
MAX_PROFILE_BYTES = 64 * 1024
# A restricted join's authorising server is about the join itself; a profile
# change must not repeat it.
_JOIN_ONLY_KEYS = ("join_authorised_via_users_server",)


class Profiles:
    """Reads and changes profiles, and keeps member events in step with them."""

    def __init__(self, store: ProfileStore, engine: RoomEngine, state: RoomStateStore) -> None:
        self._store = store
        self._engine = engine
        self._state = state
        # Asked about a local user with no profile before answering 404: an application
        # service may create users of its namespace on demand (set by wiring).
        self.ask_for_missing: Callable[[str], Awaitable[bool]] | None = None

    async def get(self, user_id: str) -> Profile:
        profile = await self._store.get_profile(user_id)
        if profile is None and self.ask_for_missing is not None \
                and await self.ask_for_missing(user_id):
            profile = await self._store.get_profile(user_id)
        if profile is None:
            raise not_found("Profile not found")
        return profile

    async def member_profile(self, user_id: str) -> JsonDict:
        """displayname/avatar_url (those set) to put in a new m.room.member join event."""
        profile = await self._store.get_profile(user_id)
        return _fields(profile) if profile is not None else {}

    async def set_field(self, user_id: str, field: str, value: str | None) -> None:
        """Store one field, then re-send the user's member event in each joined room."""
        if field == "displayname":
            await self._store.set_displayname(user_id, value)
        else:
            await self._store.set_avatar_url(user_id, value)
        await self._update_member_events(user_id, await self.member_profile(user_id))

    async def set_custom(self, user_id: str, key: str, value: Any) -> None:
        """An extended field (m.tz, custom keys): stored only, member events do not carry it."""
        try:
            await self._store.set_custom_field(user_id, key, value, MAX_PROFILE_BYTES)
        except ProfileTooLargeError:
            raise MatrixError(400, "M_PROFILE_TOO_LARGE",
                              f"A profile is at most {MAX_PROFILE_BYTES} bytes") from None

    async def on_deactivate(self, user_id: str) -> None:
        """A deactivated account keeps no profile (a DeactivationHook for account.py)."""
        await self._store.clear(user_id)

    async def _update_member_events(self, user_id: str, profile: JsonDict) -> None:
        rooms = await self._state.rooms_for_user(user_id, ("join",))
        # Rooms append in parallel (one serial queue each); one refusal does not
        # stop the others, and the profile itself is already stored.
        results = await defer.DeferredList(
            [defer.ensureDeferred(self._update_room(room_id, user_id, profile))
             for room_id in sorted(rooms)],
            consumeErrors=True,
        )
        for ok, failure in results:
            if not ok:
                logger.error("profile change of %s failed in a room: %s", user_id,
                             failure.getTraceback())

    async def _update_room(self, room_id: str, user_id: str, profile: JsonDict) -> None:
        try:
            state = await self._engine.current_state_events(room_id)
            current = state.get(("m.room.member", user_id))
            if current is None or current.content.get("membership") != "join":
                return  # left since we listed the rooms
            content = {k: v for k, v in current.content.items()
                       if k not in FIELDS and k not in _JOIN_ONLY_KEYS}
            content.update(profile)
            content["membership"] = "join"
            await self._engine.append(
                room_id, NewEvent(user_id, "m.room.member", content, state_key=user_id)
            )
        except RoomError as e:
            logger.warning("profile change of %s not applied in %s: %s", user_id, room_id, e)


def _fields(profile: Profile) -> JsonDict:
    result: JsonDict = {}
    if profile.displayname is not None:
        result["displayname"] = profile.displayname
    if profile.avatar_url is not None:
        result["avatar_url"] = profile.avatar_url
    return result


def parse_field(field: str, body: dict[str, Any]) -> str | None:
    """The new value of `field` from a PUT body; None (or "") removes it."""
    if field not in body:
        raise missing_param(field)
    value = body[field]
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid_param(f"{field} must be a string")
    if field == "displayname" and len(value) > MAX_DISPLAYNAME_LEN:
        raise invalid_param(f"displayname is longer than {MAX_DISPLAYNAME_LEN} characters")
    if field == "avatar_url":
        if len(value) > MAX_AVATAR_URL_LEN:
            raise invalid_param(f"avatar_url is longer than {MAX_AVATAR_URL_LEN} characters")
        if not value.startswith("mxc://"):
            raise invalid_param("avatar_url must be an mxc:// URI")
    return value


def check_user_id(user_id: str) -> None:
    if not user_id.startswith("@") or ":" not in user_id:
        raise MatrixError(400, "M_INVALID_PARAM", f"{user_id} is not a user id")


def check_key(key: str) -> None:
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise MatrixError(400, "M_KEY_TOO_LARGE", f"A profile key is at most {MAX_KEY_BYTES} bytes")
    if not _KEY_RE.match(key):
        raise invalid_param("Invalid profile key")


def parse_custom(key: str, body: dict[str, Any]) -> Any:
    """The new value of an extended field from a PUT body (None removes it)."""
    if key not in body:
        raise missing_param(key)
    if len(body) != 1:
        raise MatrixError(400, "M_BAD_JSON", f"The body must hold only {key}")
    value = body[key]
    if key == "m.tz" and value is not None and not isinstance(value, str):
        raise invalid_param("m.tz must be a string")
    return value


def register(router: Router, profiles: Profiles, server_name: str | None = None,
             remote: RemoteQueries | None = None) -> None:
    """``remote`` asks other servers for their users' profiles (query/profile, cached)."""

    async def remote_profile(user_id: str) -> JsonDict | None:
        """A remote user's profile from their server; None for a local user."""
        if remote is None or server_name is None or user_id.split(":", 1)[1] == server_name:
            return None
        found = await remote.profile(user_id)
        if found is None:
            raise not_found("Profile not found")
        return found

    async def get_profile(req: ApiRequest) -> JsonDict:
        check_user_id(req.params["user_id"])
        found = await remote_profile(req.params["user_id"])
        if found is not None:
            return found
        profile = await profiles.get(req.params["user_id"])
        return {**profile.fields, **_fields(profile)}

    async def get_field(req: ApiRequest) -> JsonDict:
        check_user_id(req.params["user_id"])
        key = req.params["key"]
        check_key(key)
        found = await remote_profile(req.params["user_id"])
        if found is not None:
            if found.get(key) is None:
                raise not_found(f"No {key} set")
            return {key: found[key]}
        profile = await profiles.get(req.params["user_id"])
        value = _fields(profile).get(key) if key in FIELDS else profile.fields.get(key)
        if value is None:
            raise not_found(f"No {key} set")
        return {key: value}

    def own(req: ApiRequest) -> str:
        key = req.params["key"]
        check_key(key)
        if req.params["user_id"] != req.user.user_id:
            raise forbidden("You may only change your own profile")
        return key

    async def put_field(req: ApiRequest) -> JsonDict:
        key = own(req)
        body = req.json()
        if key in FIELDS:
            await profiles.set_field(req.user.user_id, key, parse_field(key, body))
        else:
            await profiles.set_custom(req.user.user_id, key, parse_custom(key, body))
        return {}

    async def delete_field(req: ApiRequest) -> JsonDict:
        key = own(req)
        if key in FIELDS:
            await profiles.set_field(req.user.user_id, key, None)
        else:
            await profiles.set_custom(req.user.user_id, key, None)
        return {}

    router.add("GET", f"{CLIENT_PREFIX}/profile/{{user_id}}", get_profile, auth=False,
               auth_optional=True)
    path = f"{CLIENT_PREFIX}/profile/{{user_id}}/{{key}}"
    router.add("GET", path, get_field, auth=False, auth_optional=True)
    router.add("PUT", path, put_field)
    router.add("DELETE", path, delete_field)
