"""Querying and claiming end-to-end keys, here and on other servers, and serving ours.

Client side (what /keys/query and /keys/claim call): local users are read
from storage; remote users are asked of their servers, one request per
server, all servers at once, each under the caller's timeout; a server that
fails or times out is listed in `failures` and the rest is answered. Remote
users' devices are answered from the cache while they share a room with a
local user (the cache is kept current by m.device_list_update EDUs, see
device_edus.py), and fetched otherwise.

Server side: POST /user/keys/query, POST /user/keys/claim and
GET /user/devices/{userId}, for this server's users only.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from twisted.internet import defer

from roost.federation.transport.client import FederationClient, HttpResponseError
from roost.federation.transport.server import FederationRequest, FederationRouter
from roost.http.errors import MatrixError
from roost.rooms.hashing import server_name_of
from roost.storage.device_lists import DeviceListStore
from roost.storage.e2e_keys import E2eKeyStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
V1 = "/_matrix/federation/v1"
MAX_USERS = 1000
MAX_CLAIMS = 1000
CROSS_SIGNING_FIELDS = (("master", "master_keys"), ("self_signing", "self_signing_keys"),
                        ("user_signing", "user_signing_keys"))


def _bad(msg: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", msg)


def parse_query(body: JsonDict) -> dict[str, list[str]]:
    """The `device_keys` of a query: {user: [device ids]} (empty list: every device)."""
    wanted = body.get("device_keys")
    if not isinstance(wanted, dict):
        raise MatrixError(400, "M_BAD_JSON" if "device_keys" in body else "M_MISSING_PARAM",
                          "device_keys must be an object of user ids to device id lists")
    if len(wanted) > MAX_USERS:
        raise MatrixError(400, "M_INVALID_PARAM", f"at most {MAX_USERS} users per query")
    out: dict[str, list[str]] = {}
    for user_id, devices in wanted.items():
        if devices is None:
            devices = []
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise _bad("each user's devices must be a list of device ids")
        out[user_id] = devices
    return out


def parse_claim(body: JsonDict) -> list[tuple[str, str, str]]:
    """The `one_time_keys` of a claim: (user, device, algorithm) triples."""
    wanted = body.get("one_time_keys")
    if not isinstance(wanted, dict):
        raise MatrixError(400, "M_BAD_JSON" if "one_time_keys" in body else "M_MISSING_PARAM",
                          "one_time_keys must be an object")
    out: list[tuple[str, str, str]] = []
    for user_id, devices in wanted.items():
        if not isinstance(devices, dict):
            raise _bad("each user's entry must map device ids to algorithms")
        for device_id, algorithm in devices.items():
            if not isinstance(algorithm, str):
                raise _bad("an algorithm must be a string")
            out.append((user_id, device_id, algorithm))
    if len(out) > MAX_CLAIMS:
        raise MatrixError(400, "M_INVALID_PARAM", f"at most {MAX_CLAIMS} keys per claim")
    return out


class KeyQueries:
    def __init__(self, keys: E2eKeyStore, lists: DeviceListStore, client: FederationClient | None,
                 server_name: str) -> None:
        self._keys = keys
        self._lists = lists
        self._client = client
        self._server_name = server_name

    def is_local(self, user_id: str) -> bool:
        return server_name_of(user_id) == self._server_name

    # -- local ---------------------------------------------------------------------

    async def local_query(self, wanted: dict[str, list[str]], requester: str | None,
                          over_federation: bool = False) -> JsonDict:
        devices = await self._keys.device_keys(wanted)
        out: JsonDict = {"device_keys": {u: devices.get(u, {}) for u in wanted}}
        cross = await self._keys.cross_signing_keys(wanted, requester)
        for key_type, field in CROSS_SIGNING_FIELDS:
            if over_federation and key_type == "user_signing":
                continue
            found = {u: k[key_type] for u, k in cross.items() if key_type in k}
            if found or key_type != "user_signing":
                out[field] = found
        return out

    # -- both --------------------------------------------------------------------------

    async def query(self, requester: str, wanted: dict[str, list[str]], timeout_s: float
                    ) -> JsonDict:
        local = {u: d for u, d in wanted.items() if self.is_local(u)}
        out = await self.local_query(local, requester)
        out.setdefault("user_signing_keys", {})
        failures: JsonDict = {}
        by_server: dict[str, dict[str, list[str]]] = {}
        for user_id, devices in wanted.items():
            if self.is_local(user_id):
                continue
            server = server_name_of(user_id)
            if not server:
                continue
            cached = await self._cached(user_id)
            if cached is not None:
                _merge_remote(out, user_id, cached, devices)
            else:
                by_server.setdefault(server, {})[user_id] = devices
        answers = await self._fan_out(by_server, "/user/keys/query",
                                      lambda users: {"device_keys": users}, timeout_s)
        for server, (answer, error) in answers.items():
            if error is not None:
                failures[server] = error
                continue
            await self._take_remote_answer(out, by_server[server], answer)
        out["failures"] = failures
        return out

    async def claim(self, wanted: list[tuple[str, str, str]], timeout_s: float) -> JsonDict:
        local = [w for w in wanted if self.is_local(w[0])]
        keys: JsonDict = await self._keys.claim(local) if local else {}
        by_server: dict[str, dict[str, dict[str, str]]] = {}
        for user_id, device_id, algorithm in wanted:
            if not self.is_local(user_id) and server_name_of(user_id):
                by_server.setdefault(server_name_of(user_id), {}).setdefault(
                    user_id, {})[device_id] = algorithm
        answers = await self._fan_out(by_server, "/user/keys/claim",
                                      lambda users: {"one_time_keys": users}, timeout_s)
        failures: JsonDict = {}
        for server, (answer, error) in answers.items():
            if error is not None:
                failures[server] = error
                continue
            claimed = answer.get("one_time_keys") if isinstance(answer, dict) else None
            for user_id, devices in (claimed or {}).items():
                if user_id in by_server[server] and isinstance(devices, dict):
                    keys[user_id] = {d: k for d, k in devices.items() if isinstance(k, dict)}
        return {"one_time_keys": keys, "failures": failures}

    async def _fan_out(self, by_server: dict[str, Any], path: str, body: Any,
                       timeout_s: float) -> dict[str, tuple[Any, JsonDict | None]]:
        """One request per server, all at once: {server: (answer, failure or None)}."""
        if not by_server:
            return {}
        servers = sorted(by_server)

        async def one(server: str) -> tuple[Any, JsonDict | None]:
            if self._client is None:
                return None, {"status": 503, "message": "federation is disabled"}
            try:
                answer = await self._client.post_json(server, V1 + path, body(by_server[server]),
                                                      timeout_s=timeout_s)
                if not isinstance(answer, dict):
                    return None, {"status": 502, "message": "answer is not a JSON object"}
                return answer, None
            except HttpResponseError as e:
                return None, {"status": e.status, "message": str(e)}
            except Exception as e:  # unreachable, timed out, backing off
                return None, {"status": 503, "message": f"{type(e).__name__}: {e}"}

        results = await defer.gatherResults(
            [defer.ensureDeferred(one(s)) for s in servers], consumeErrors=True)
        return dict(zip(servers, results, strict=True))

    # -- the remote cache --------------------------------------------------------------

    async def _cached(self, user_id: str) -> JsonDict | None:
        """The cached devices of a remote user, if they still share a room with us."""
        found = await self._lists.remote_devices(user_id)
        if found is None:
            return None
        if not await self._lists.shares_room_with_local_user(user_id):
            await self._lists.drop_remote_devices(user_id)  # no longer tracked
            return None
        return found[1]

    async def _take_remote_answer(self, out: JsonDict, asked: dict[str, list[str]],
                                  answer: JsonDict) -> None:
        devices = answer.get("device_keys") if isinstance(answer.get("device_keys"), dict) else {}
        for user_id, wanted in asked.items():
            got = devices.get(user_id)
            got = {d: k for d, k in got.items() if isinstance(k, dict)} if isinstance(
                got, dict) else {}
            cached: JsonDict = {"devices": got}
            for key_type, field in CROSS_SIGNING_FIELDS[:2]:
                value = (answer.get(field) or {}).get(user_id) if isinstance(
                    answer.get(field), dict) else None
                if isinstance(value, dict):
                    cached[f"{key_type}_key"] = value
            _merge_remote(out, user_id, cached, wanted)
            if not wanted and await self._lists.shares_room_with_local_user(user_id):
                existing = await self._lists.remote_devices(user_id)
                await self._lists.set_remote_devices(user_id, existing[0] if existing else None,
                                                     cached)

    async def resync(self, user_id: str, timeout_s: float = 10.0) -> JsonDict | None:
        """Fetch a remote user's devices with /user/devices and cache them; None on failure."""
        if self._client is None:
            return None
        try:
            answer = await self._client.get_json(
                server_name_of(user_id), f"{V1}/user/devices/{quote(user_id, safe='')}",
                timeout_s=timeout_s)
        except Exception as e:
            logger.info("device resync of %s failed: %s", user_id, e)
            return None
        if not isinstance(answer, dict) or answer.get("user_id") != user_id:
            return None
        devices: JsonDict = {}
        for device in answer.get("devices") or []:
            if isinstance(device, dict) and isinstance(device.get("device_id"), str) and \
                    isinstance(device.get("keys"), dict):
                keys = dict(device["keys"])
                if isinstance(device.get("device_display_name"), str):
                    keys["unsigned"] = {"device_display_name": device["device_display_name"]}
                devices[device["device_id"]] = keys
        cached: JsonDict = {"devices": devices}
        for key_type in ("master", "self_signing"):
            if isinstance(answer.get(f"{key_type}_key"), dict):
                cached[f"{key_type}_key"] = answer[f"{key_type}_key"]
        stream_id = answer.get("stream_id")
        await self._lists.set_remote_devices(
            user_id, stream_id if isinstance(stream_id, int) else None, cached)
        return cached

    # -- served to other servers -----------------------------------------------------

    def register(self, router: FederationRouter) -> None:
        router.add("POST", V1 + "/user/keys/query", self.on_query)
        router.add("POST", V1 + "/user/keys/claim", self.on_claim)
        router.add("GET", V1 + "/user/devices/{userId}", self.on_devices)

    async def on_query(self, req: FederationRequest) -> JsonDict:
        wanted = parse_query(req.json())
        local = {u: d for u, d in wanted.items() if self.is_local(u)}
        return await self.local_query(local, None, over_federation=True)

    async def on_claim(self, req: FederationRequest) -> JsonDict:
        wanted = [w for w in parse_claim(req.json()) if self.is_local(w[0])]
        return {"one_time_keys": await self._keys.claim(wanted) if wanted else {}}

    async def on_devices(self, req: FederationRequest) -> JsonDict:
        user_id = req.params["userId"]
        if not self.is_local(user_id):
            raise MatrixError(403, "M_FORBIDDEN", "not a user of this server")
        # The position first: the devices read after it hold at least every change up
        # to it. Read the other way round, a change committing between the two reads
        # would be covered by the position but missing from the devices, and the asking
        # server would then drop that change's update as already seen.
        stream_id = await self._lists.latest_position(user_id)
        devices = (await self._keys.device_keys({user_id: []})).get(user_id, {})
        out: JsonDict = {
            "user_id": user_id,
            "stream_id": stream_id,
            "devices": [_device_entry(d, k) for d, k in sorted(devices.items())],
        }
        cross = (await self._keys.cross_signing_keys([user_id], None)).get(user_id, {})
        for key_type in ("master", "self_signing"):
            if key_type in cross:
                out[f"{key_type}_key"] = cross[key_type]
        return out


def _device_entry(device_id: str, keys: JsonDict) -> JsonDict:
    keys = dict(keys)
    name = keys.pop("unsigned", {}).get("device_display_name")
    entry: JsonDict = {"device_id": device_id, "keys": keys}
    if name is not None:
        entry["device_display_name"] = name
    return entry


def _merge_remote(out: JsonDict, user_id: str, cached: JsonDict, wanted: list[str]) -> None:
    devices = cached.get("devices") or {}
    out["device_keys"][user_id] = {d: k for d, k in devices.items() if not wanted or d in wanted}
    for key_type, field in CROSS_SIGNING_FIELDS[:2]:
        if isinstance(cached.get(f"{key_type}_key"), dict):
            out.setdefault(field, {})[user_id] = cached[f"{key_type}_key"]
