"""What clients ask about other servers: their users' profiles and their room directories.

The client side of federation's `query/profile` and `publicRooms` (an alias of
another server is `RemoteRooms.resolve_alias`, beside the joins that use it).
Profiles are cached for `PROFILE_TTL_S` (members' names are read often and change
rarely), at most `PROFILE_CACHE_SIZE` of them, least recently used forgotten; a
"no such user" answer is cached too, so a client polling a missing user does not
make a request each time. A profile that cannot be had (the server refuses or
cannot be reached) is "not found", the one failure GET /profile has.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

from roost.federation.transport.client import FederationClientError, HttpResponseError
from roost.rooms.engine import RoomError
from roost.rooms.hashing import server_name_of

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

PROFILE_TTL_S = 600.0
PROFILE_CACHE_SIZE = 10_000
# The largest page of another server's directory a client may ask for.
MAX_PUBLIC_ROOMS_LIMIT = 500
_PROFILE_FIELDS = ("displayname", "avatar_url")


class Client(Protocol):
    async def get_json(self, destination: str, path: str, args: Mapping[str, Any] | None = None,
                       **options: Any) -> Any: ...

    async def post_json(self, destination: str, path: str, body: Any,
                        args: Mapping[str, Any] | None = None, **options: Any) -> Any: ...


class Clock(Protocol):
    def seconds(self) -> float: ...


class RemoteQueries:
    def __init__(self, client: Client, clock: Clock) -> None:
        self._client = client
        self._clock = clock
        # user id -> (fetched at, profile or None for "no such profile")
        self._profiles: OrderedDict[str, tuple[float, JsonDict | None]] = OrderedDict()

    # -- profiles ------------------------------------------------------------------

    async def profile(self, user_id: str) -> JsonDict | None:
        """A remote user's displayname/avatar_url (absent keys left out); None if unknown."""
        now = self._clock.seconds()
        cached = self._profiles.get(user_id)
        if cached is not None and now - cached[0] < PROFILE_TTL_S:
            self._profiles.move_to_end(user_id)
            return cached[1]
        try:
            answer = await self._client.get_json(
                server_name_of(user_id), "/_matrix/federation/v1/query/profile",
                {"user_id": user_id})
        except HttpResponseError as e:
            if e.status == 404:
                self._remember(user_id, now, None)
                return None
            logger.info("profile of %s: %s answered %s", user_id, e.destination, e.status)
            return None
        except FederationClientError as e:
            if cached is not None:  # an old answer beats none while the server is away
                return cached[1]
            # The spec's answers for GET /profile are the profile or 404: a profile
            # that cannot be had now is one "not found" (not remembered, so it is
            # asked again next time).
            logger.info("profile of %s: server unreachable: %s", user_id, e)
            return None
        # displayname and avatar_url when strings; other (extended) fields as given.
        profile = {k: v for k, v in answer.items() if v is not None and
                   (k not in _PROFILE_FIELDS or isinstance(v, str))
                   } if isinstance(answer, dict) else {}
        self._remember(user_id, now, profile)
        return profile

    def _remember(self, user_id: str, now: float, profile: JsonDict | None) -> None:
        self._profiles[user_id] = (now, profile)
        self._profiles.move_to_end(user_id)
        while len(self._profiles) > PROFILE_CACHE_SIZE:
            self._profiles.popitem(last=False)

    # -- room directories ----------------------------------------------------------

    async def public_rooms(self, server: str, limit: int | None, since: str | None,
                           search: Mapping[str, Any] | None,
                           include_all_networks: bool = False,
                           third_party_instance_id: str | None = None) -> JsonDict:
        """One page of `server`'s public room directory (GET without a filter, else POST)."""
        path = "/_matrix/federation/v1/publicRooms"
        body: JsonDict = {}
        if limit is not None:
            body["limit"] = min(limit, MAX_PUBLIC_ROOMS_LIMIT)
        if since is not None:
            body["since"] = since
        if include_all_networks:
            body["include_all_networks"] = True
        if third_party_instance_id is not None:
            body["third_party_instance_id"] = third_party_instance_id
        try:
            if search:
                answer = await self._client.post_json(server, path, {**body, "filter": search})
            else:
                args = {k: str(v).lower() if isinstance(v, bool) else str(v)
                        for k, v in body.items()}
                answer = await self._client.get_json(server, path, args)
        except HttpResponseError as e:
            if 400 <= e.status < 500:
                raise RoomError(e.status, e.errcode or "M_UNKNOWN",
                                f"{server}: {e.error}") from None
            raise RoomError(502, "M_UNKNOWN", f"{server} answered {e.status}") from None
        except FederationClientError as e:
            raise RoomError(502, "M_UNKNOWN", f"could not reach {server}: {e}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("chunk"), list):
            raise RoomError(502, "M_UNKNOWN", f"{server} gave no room directory")
        result: JsonDict = {"chunk": [r for r in answer["chunk"] if isinstance(r, dict)
                                      and isinstance(r.get("room_id"), str)]}
        for key in ("next_batch", "prev_batch"):
            if isinstance(answer.get(key), str):
                result[key] = answer[key]
        estimate = answer.get("total_room_count_estimate")
        if isinstance(estimate, int) and not isinstance(estimate, bool):
            result["total_room_count_estimate"] = estimate
        return result
