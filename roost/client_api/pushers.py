"""GET /pushers and POST /pushers/set (http pushers; `kind: null` removes one).

Pushers are checked whole before anything is stored. Delivery itself is
roost.push.pushers'; this module tells it which pushers came and went.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from roost.client_api.errors import bad_json, invalid_param, missing_param
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.push.evaluator import PushEvaluator
from roost.push.pushers import NOTIFY_PATH, PusherDelivery
from roost.storage.push import Pusher, PusherStore

MAX_APP_ID = 64
MAX_PUSHKEY_BYTES = 512


def _string(body: JsonDict, name: str, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise missing_param(name)
        return None
    if not isinstance(value, str):
        raise bad_json(f"{name} must be a string")
    return value


def check_data(data: Any) -> dict[str, Any]:
    if data is None:
        raise missing_param("data")
    if not isinstance(data, dict):
        raise bad_json("data must be an object")
    url = data.get("url")
    if not isinstance(url, str):
        raise invalid_param("data.url is required for http pushers")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path != NOTIFY_PATH:
        raise invalid_param(f"data.url must be an http(s) URL with the path {NOTIFY_PATH}")
    if "format" in data and data["format"] != "event_id_only":
        raise invalid_param("the only pusher data format is event_id_only")
    return data


def pusher_json(pusher: Pusher) -> JsonDict:
    out: JsonDict = {"pushkey": pusher.pushkey, "kind": pusher.kind, "app_id": pusher.app_id,
                     "app_display_name": pusher.app_display_name,
                     "device_display_name": pusher.device_display_name, "lang": pusher.lang,
                     "data": pusher.data}
    if pusher.profile_tag is not None:
        out["profile_tag"] = pusher.profile_tag
    return out


class Pushers:
    def __init__(self, store: PusherStore, delivery: PusherDelivery,
                 evaluator: PushEvaluator, clock: Any) -> None:
        self.store = store
        self.delivery = delivery
        self._evaluator = evaluator
        self._clock = clock

    async def set(self, user_id: str, device_id: str | None, body: JsonDict) -> None:
        app_id = _string(body, "app_id")
        pushkey = _string(body, "pushkey")
        assert app_id is not None and pushkey is not None
        if not app_id or len(app_id) > MAX_APP_ID:
            raise invalid_param(f"app_id must be 1 to {MAX_APP_ID} characters")
        if not pushkey or len(pushkey.encode()) > MAX_PUSHKEY_BYTES:
            raise invalid_param(f"pushkey must be 1 to {MAX_PUSHKEY_BYTES} bytes")
        if "kind" not in body:
            raise missing_param("kind")
        kind = body["kind"]
        if kind is None:
            if await self.store.remove(user_id, app_id, pushkey):
                self.delivery.removed(user_id, app_id, pushkey)
            return
        if not isinstance(kind, str):
            raise bad_json("kind must be a string or null")
        if kind != "http":
            raise invalid_param(f"unsupported pusher kind: {kind}")
        append = body.get("append", False)
        if not isinstance(append, bool):
            raise bad_json("append must be a boolean")
        app_name = _string(body, "app_display_name")
        device_name = _string(body, "device_display_name")
        lang = _string(body, "lang")
        profile_tag = _string(body, "profile_tag", required=False)
        data = check_data(body.get("data"))
        assert app_name is not None and device_name is not None and lang is not None
        pusher = Pusher(user_id, app_id, pushkey, device_id, kind, app_name, device_name,
                        profile_tag, lang, data, int(self._clock.seconds() * 1000),
                        self._evaluator.position)
        for other_user, other_app, other_key in await self.store.add(pusher, append):
            self.delivery.removed(other_user, other_app, other_key)
        self.delivery.added(pusher)

    async def password_changed(self, user_id: str, device_id: str | None) -> None:
        """A password change removes the user's pushers other than the changing device's."""
        for app_id, pushkey in await self.store.remove_other_devices(user_id, device_id):
            self.delivery.removed(user_id, app_id, pushkey)


def register(router: Router, pushers: Pushers) -> None:
    async def get_pushers(req: ApiRequest) -> JsonDict:
        found = await pushers.store.for_user(req.user.user_id)
        return {"pushers": [pusher_json(p) for p in found]}

    async def set_pusher(req: ApiRequest) -> JsonDict:
        await pushers.set(req.user.user_id, req.user.device_id, req.json())
        return {}

    router.add("GET", f"{CLIENT_PREFIX}/pushers", get_pushers)
    router.add("POST", f"{CLIENT_PREFIX}/pushers/set", set_pusher)
