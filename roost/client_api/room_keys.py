"""Server-side key backup: /room_keys/version[/{version}] and /room_keys/keys[/{roomId}[/{sessionId}]].

Keys may only be stored in the user's current (latest) backup version: any
other gets 403 M_WRONG_ROOM_KEYS_VERSION with `current_version`. Stores and
deletes answer the version's `etag` (it moves whenever its keys change) and
`count`; a stored session key is only replaced by a better one (see
storage/e2e_backup.py).
"""

from __future__ import annotations

from typing import Any

from roost.client_api.errors import MatrixError, bad_json, invalid_param, missing_param, not_found
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.storage.e2e_backup import BackupVersion, KeyBackupStore, RoomKey

MAX_KEYS_PER_UPLOAD = 10_000


def _version_json(v: BackupVersion) -> JsonDict:
    return {"algorithm": v.algorithm, "auth_data": v.auth_data, "count": v.count,
            "etag": str(v.etag), "version": str(v.version)}


def _version_number(raw: str | None) -> int | None:
    """A version string as stored (an integer); None when it cannot name a backup."""
    if raw is None or not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)


def _room_key(room_id: str, session_id: str, data: Any) -> RoomKey:
    if not isinstance(data, dict):
        raise bad_json("a session's key data must be an object")
    index, forwarded = data.get("first_message_index"), data.get("forwarded_count")
    verified, session = data.get("is_verified"), data.get("session_data")
    for name, value in (("first_message_index", index), ("forwarded_count", forwarded)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
            raise invalid_param(f"{name} must be a non-negative integer")
    if not isinstance(verified, bool):
        raise invalid_param("is_verified must be a boolean")
    if not isinstance(session, dict):
        raise invalid_param("session_data must be an object")
    return RoomKey(room_id, session_id, index, forwarded, verified, session)  # type: ignore[arg-type]


def _sessions(room_id: str, body: Any) -> list[RoomKey]:
    if not isinstance(body, dict) or not isinstance(body.get("sessions"), dict):
        raise bad_json("a room's keys must be an object with sessions")
    return [_room_key(room_id, sid, data) for sid, data in body["sessions"].items()]


def register(router: Router, store: KeyBackupStore) -> None:
    async def create_version(req: ApiRequest) -> JsonDict:
        body = req.json()
        algorithm, auth_data = body.get("algorithm"), body.get("auth_data")
        if not isinstance(algorithm, str) or not algorithm:
            raise missing_param("algorithm") if algorithm is None else invalid_param(
                "algorithm must be a string")
        if not isinstance(auth_data, dict):
            raise missing_param("auth_data") if auth_data is None else invalid_param(
                "auth_data must be an object")
        return {"version": str(await store.create_version(req.user.user_id, algorithm,
                                                           auth_data))}

    async def latest_version(req: ApiRequest) -> JsonDict:
        found = await store.get_version(req.user.user_id, None)
        if found is None:
            raise not_found("No current backup version")
        return _version_json(found)

    async def get_version(req: ApiRequest) -> JsonDict:
        number = _version_number(req.params["version"])
        found = None if number is None else await store.get_version(req.user.user_id, number)
        if found is None:
            raise not_found("Unknown backup version")
        return _version_json(found)

    async def update_version(req: ApiRequest) -> JsonDict:
        body = req.json()
        number = _version_number(req.params["version"])
        found = None if number is None else await store.get_version(req.user.user_id, number)
        if found is None:
            raise not_found("Unknown backup version")
        if "version" in body and body["version"] != req.params["version"]:
            raise invalid_param("version in the body does not match the path")
        if body.get("algorithm") != found.algorithm:
            raise invalid_param("Algorithm does not match")
        if not isinstance(body.get("auth_data"), dict):
            raise invalid_param("auth_data must be an object")
        await store.update_version(req.user.user_id, found.version, body["auth_data"])
        return {}

    async def delete_version(req: ApiRequest) -> JsonDict:
        number = _version_number(req.params["version"])
        if number is None or not await store.delete_version(req.user.user_id, number):
            raise not_found("Unknown backup version")
        return {}

    async def writable_version(req: ApiRequest) -> int:
        raw = req.arg("version")
        if raw is None:
            raise missing_param("version")
        current = await store.get_version(req.user.user_id, None)
        if current is None:
            raise not_found("Unknown backup version")
        if _version_number(raw) != current.version:
            raise MatrixError(403, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version.",
                              current_version=str(current.version))
        return current.version

    async def readable_version(req: ApiRequest) -> int:
        raw = req.arg("version")
        if raw is None:
            raise missing_param("version")
        number = _version_number(raw)
        if number is None or await store.get_version(req.user.user_id, number) is None:
            raise not_found("Unknown backup version")
        return number

    async def put(req: ApiRequest, keys: list[RoomKey]) -> JsonDict:
        if len(keys) > MAX_KEYS_PER_UPLOAD:
            raise invalid_param(f"at most {MAX_KEYS_PER_UPLOAD} keys per request")
        version = await writable_version(req)
        done = await store.put_keys(req.user.user_id, version, keys)
        if done is None:
            raise not_found("Unknown backup version")
        return {"etag": str(done[0]), "count": done[1]}

    async def put_all(req: ApiRequest) -> JsonDict:
        rooms = req.json().get("rooms")
        if not isinstance(rooms, dict):
            raise bad_json("rooms must be an object")
        return await put(req, [k for room_id, body in rooms.items()
                               for k in _sessions(room_id, body)])

    async def put_room(req: ApiRequest) -> JsonDict:
        return await put(req, _sessions(req.params["room_id"], req.json()))

    async def put_session(req: ApiRequest) -> JsonDict:
        return await put(req, [_room_key(req.params["room_id"], req.params["session_id"],
                                         req.json())])

    async def get_all(req: ApiRequest) -> JsonDict:
        keys = await store.get_keys(req.user.user_id, await readable_version(req), None, None)
        rooms: JsonDict = {}
        for key in keys:
            rooms.setdefault(key.room_id, {"sessions": {}})["sessions"][key.session_id] = \
                key.to_json()
        return {"rooms": rooms}

    async def get_room(req: ApiRequest) -> JsonDict:
        keys = await store.get_keys(req.user.user_id, await readable_version(req),
                                    req.params["room_id"], None)
        return {"sessions": {k.session_id: k.to_json() for k in keys}}

    async def get_session(req: ApiRequest) -> JsonDict:
        keys = await store.get_keys(req.user.user_id, await readable_version(req),
                                    req.params["room_id"], req.params["session_id"])
        if not keys:
            raise not_found("No such key in the backup")
        return keys[0].to_json()

    async def delete(req: ApiRequest) -> JsonDict:
        version = await readable_version(req)
        done = await store.delete_keys(req.user.user_id, version, req.params.get("room_id"),
                                       req.params.get("session_id"))
        if done is None:
            raise not_found("Unknown backup version")
        return {"etag": str(done[0]), "count": done[1]}

    base = f"{CLIENT_PREFIX}/room_keys"
    router.add("POST", f"{base}/version", create_version)
    router.add("GET", f"{base}/version", latest_version)
    router.add("GET", f"{base}/version/{{version}}", get_version)
    router.add("PUT", f"{base}/version/{{version}}", update_version)
    router.add("DELETE", f"{base}/version/{{version}}", delete_version)
    router.add("PUT", f"{base}/keys", put_all)
    router.add("GET", f"{base}/keys", get_all)
    router.add("DELETE", f"{base}/keys", delete)
    router.add("PUT", f"{base}/keys/{{room_id}}", put_room)
    router.add("GET", f"{base}/keys/{{room_id}}", get_room)
    router.add("DELETE", f"{base}/keys/{{room_id}}", delete)
    router.add("PUT", f"{base}/keys/{{room_id}}/{{session_id}}", put_session)
    router.add("GET", f"{base}/keys/{{room_id}}/{{session_id}}", get_session)
    router.add("DELETE", f"{base}/keys/{{room_id}}/{{session_id}}", delete)
