"""POST /keys/upload, /keys/query, /keys/claim and GET /keys/changes.

Uploaded device keys are checked (user and device match the request, the
self-signature verifies) and a device's identity keys, once stored, cannot
be replaced; a change of a device's keys is announced on the device_lists
stream. Queries and claims for remote users go through the federation's
KeyQueries, one request per server with the request's timeout.
"""

from __future__ import annotations

from collections.abc import Callable

from roost.client_api.device_lists import DeviceLists
from roost.client_api.errors import MatrixError, invalid_param, missing_param
from roost.client_api.key_checks import (
    check_device_keys,
    check_fallback_keys,
    check_one_time_keys,
)
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.federation.user_keys import KeyQueries, parse_claim, parse_query
from roost.storage.e2e_keys import E2eKeyStore, KeyConflict

DEFAULT_TIMEOUT_MS = 10_000
MAX_TIMEOUT_MS = 60_000
MAX_ONE_TIME_KEYS = 1000

# A sync token -> (events position, device_lists position); raises on a bad token.
TokenPositions = Callable[[str], tuple[int, int]]


def _timeout_s(body: JsonDict) -> float:
    timeout = body.get("timeout", DEFAULT_TIMEOUT_MS)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise invalid_param("timeout must be a non-negative integer")
    return min(timeout, MAX_TIMEOUT_MS) / 1000


class KeyUploads:
    def __init__(self, keys: E2eKeyStore, lists: DeviceLists) -> None:
        self._keys = keys
        self._lists = lists

    async def upload(self, user_id: str, device_id: str, body: JsonDict) -> JsonDict:
        device_keys = body.get("device_keys")
        if device_keys is not None:
            device_keys = check_device_keys(device_keys, user_id, device_id)
        one_time = check_one_time_keys(body.get("one_time_keys"), "one_time_keys")
        if len(one_time) > MAX_ONE_TIME_KEYS:
            raise invalid_param(f"at most {MAX_ONE_TIME_KEYS} one-time keys per upload")
        raw_fallback = body.get("fallback_keys", body.get("org.matrix.msc2732.fallback_keys"))
        fallback = check_fallback_keys(raw_fallback)
        try:
            changed, counts = await self._keys.upload(user_id, device_id, device_keys, one_time,
                                                      fallback)
        except KeyConflict as e:
            raise MatrixError(400, "M_INVALID_PARAM", str(e)) from None
        if changed:
            await self._lists.changed(user_id, [device_id])
        return {"one_time_key_counts": counts}


def register(router: Router, uploads: KeyUploads, queries: KeyQueries, lists: DeviceLists,
             positions: TokenPositions) -> None:
    async def upload(req: ApiRequest) -> JsonDict:
        return await uploads.upload(req.user.user_id, req.user.device_id, req.json())

    async def upload_for_device(req: ApiRequest) -> JsonDict:
        if req.params["device_id"] != req.user.device_id:
            raise MatrixError(400, "M_INVALID_PARAM", "keys may only be uploaded for this device")
        return await upload(req)

    async def query(req: ApiRequest) -> JsonDict:
        body = req.json()
        timeout = _timeout_s(body)
        return await queries.query(req.user.user_id, parse_query(body), timeout)

    async def claim(req: ApiRequest) -> JsonDict:
        body = req.json()
        timeout = _timeout_s(body)
        return await queries.claim(parse_claim(body), timeout)

    async def changes(req: ApiRequest) -> JsonDict:
        raw_from, raw_to = req.arg("from"), req.arg("to")
        if raw_from is None:
            raise missing_param("from")
        if raw_to is None:
            raise missing_param("to")
        from_events, from_lists = positions(raw_from)
        to_events, to_lists = positions(raw_to)
        changed, left = await lists.store.changes_for(
            req.user.user_id, from_lists, to_lists, from_events, to_events)
        return {"changed": sorted(changed), "left": sorted(left)}

    router.add("POST", f"{CLIENT_PREFIX}/keys/upload", upload)
    router.add("POST", f"{CLIENT_PREFIX}/keys/upload/{{device_id}}", upload_for_device)
    router.add("POST", f"{CLIENT_PREFIX}/keys/query", query)
    router.add("POST", f"{CLIENT_PREFIX}/keys/claim", claim)
    router.add("GET", f"{CLIENT_PREFIX}/keys/changes", changes)

