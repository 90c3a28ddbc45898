"""The end-to-end EDUs: m.device_list_update, m.signing_key_update, m.direct_to_device.

Inbound (handed over by ingest.py with the other EDUs): a device list update
is applied to the cached copy of the user's devices when its `prev_id` names
the last update we applied; otherwise an update was lost and the user's
devices are fetched again with /user/devices (a resync). Either way local
users sharing a room hear of the change through the device_lists stream.
To-device messages from another server are delivered once per message id.

Outbound: `DeviceListSender` follows the device_lists stream through the
notifier and queues an m.device_list_update (one per changed device, with
`stream_id` and `prev_id`) or an m.signing_key_update for every server that
shares a room with the local user who changed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer

from roost.federation.user_keys import KeyQueries
from roost.rooms.hashing import server_name_of
from roost.storage.device_lists import DeviceListStore
from roost.storage.e2e_keys import E2eKeyStore
from roost.storage.notifier import Notifier, StreamChange

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
E2E_EDUS = ("m.device_list_update", "m.signing_key_update", "m.direct_to_device")
MAX_TO_DEVICE_TARGETS = 1000
CROSS_SIGNING_DEVICE = ""  # the device id a cross-signing key change is recorded under

# (user_id, device_ids): record a change of a user's devices in the device_lists stream.
RecordChange = Callable[[str, list[str]], Awaitable[None]]
# (origin, message_id, sender, type, {user: {device or "*": content}}): deliver once.
DeliverToDevice = Callable[[str, str, str, str, JsonDict], Awaitable[None]]
# (destination, edu_type, content) rows for the federation sender's queue.
QueueEdus = Callable[[list[tuple[str, str, JsonDict]]], Awaitable[None]]


class InboundDeviceEdus:
    def __init__(self, queries: KeyQueries, lists: DeviceListStore, record_change: RecordChange,
                 deliver: DeliverToDevice) -> None:
        self._queries = queries
        self._lists = lists
        self._record = record_change
        self._deliver = deliver
        self._locks: dict[str, defer.DeferredLock] = {}

    async def __call__(self, origin: str, kind: str, content: JsonDict) -> None:
        # One at a time per origin for to-device messages (each sender's arrive in the
        # order sent), per user for device list updates (each applied on the last).
        if kind == "m.direct_to_device":
            key = f"to_device {origin}"
        else:
            key = content.get("user_id")
            if not isinstance(key, str) or server_name_of(key) != origin:
                return
        lock = self._locks.setdefault(key, defer.DeferredLock())
        await lock.acquire()
        try:
            if kind == "m.direct_to_device":
                await self._to_device(origin, content)
            elif kind == "m.device_list_update":
                await self._device_list_update(key, content)
            elif kind == "m.signing_key_update":
                await self._signing_key_update(key, content)
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(key, None)

    async def _device_list_update(self, user_id: str, content: JsonDict) -> None:
        device_id, stream_id = content.get("device_id"), content.get("stream_id")
        if not isinstance(device_id, str) or not isinstance(stream_id, int):
            return
        prev = [p for p in content.get("prev_id") or [] if isinstance(p, int)]
        if not await self._lists.shares_room_with_local_user(user_id):
            await self._lists.drop_remote_devices(user_id)
            return
        cached = await self._lists.remote_devices(user_id)
        if cached is not None:
            known, devices = cached
            if known is not None and stream_id <= known:
                return  # seen already
            if known is not None and known in prev:
                if content.get("deleted") is True:
                    devices.get("devices", {}).pop(device_id, None)
                elif isinstance(content.get("keys"), dict):
                    keys = dict(content["keys"])
                    name = content.get("device_display_name")
                    if isinstance(name, str):
                        keys["unsigned"] = {"device_display_name": name}
                    devices.setdefault("devices", {})[device_id] = keys
                await self._lists.set_remote_devices(user_id, stream_id, devices)
            else:
                logger.info("device list of %s has a gap (have %s, prev %s): resync",
                            user_id, known, prev)
                await self._queries.resync(user_id)
        await self._record(user_id, [device_id])

    async def _signing_key_update(self, user_id: str, content: JsonDict) -> None:
        if not await self._lists.shares_room_with_local_user(user_id):
            return
        cached = await self._lists.remote_devices(user_id)
        if cached is not None:
            known, devices = cached
            for key_type in ("master", "self_signing"):
                key = content.get(f"{key_type}_key")
                if isinstance(key, dict) and key.get("user_id") == user_id:
                    devices[f"{key_type}_key"] = key
            await self._lists.set_remote_devices(user_id, known, devices)
        await self._record(user_id, [CROSS_SIGNING_DEVICE])

    async def _to_device(self, origin: str, content: JsonDict) -> None:
        sender, kind = content.get("sender"), content.get("type")
        message_id, messages = content.get("message_id"), content.get("messages")
        if not (isinstance(sender, str) and isinstance(kind, str) and isinstance(message_id, str)
                and isinstance(messages, dict)) or server_name_of(sender) != origin:
            return
        local = {u: m for u, m in messages.items()
                 if isinstance(u, str) and self._queries.is_local(u) and isinstance(m, dict)}
        if sum(len(m) for m in local.values()) > MAX_TO_DEVICE_TARGETS:
            return
        await self._deliver(origin, message_id, sender, kind, local)


class DeviceListSender:
    """Tells other servers about local users' device and cross-signing key changes."""

    def __init__(self, lists: DeviceListStore, keys: E2eKeyStore, notifier: Notifier,
                 queue: QueueEdus, server_name: str, position: int) -> None:
        self._lists = lists
        self._keys = keys
        self._queue = queue
        self._server_name = server_name
        self._position = position
        self._latest = position
        self._running = False
        self._again = False
        self._notifier = notifier
        self._stop: Any = None

    async def start(self) -> None:
        """Resume from the stored position (first start: now) and catch up, then follow."""
        stored = await self._lists.sent_position()
        if stored is None:
            await self._lists.set_sent_position(self._latest)
        else:
            self._position = min(stored, self._latest)
        self._stop = self._notifier.add_listener(self._on_change)
        if self._position < self._latest:
            self._running = True
            self._spawn(self._latest)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()

    def _spawn(self, upto: int) -> None:
        defer.ensureDeferred(self._run(upto)).addErrback(
            lambda f: logger.error("device list sending failed: %s", f.getTraceback()))

    def _on_change(self, change: StreamChange) -> None:
        if change.stream != "device_lists":
            return
        self._latest = max(self._latest, change.position)
        if not any(server_name_of(u) == self._server_name for u in change.users):
            if not self._running:  # only remote users' rows lie up to here: nothing to send
                self._position = max(self._position, change.position)
            return
        if self._running:
            self._again = True
            return
        self._running = True
        self._spawn(change.position)

    async def _run(self, upto: int) -> None:
        try:
            while True:
                self._again = False
                if upto > self._position:
                    rows = await self._lists.local_changes(self._position, upto)
                    await self._send(rows)
                    self._position = upto
                    await self._lists.set_sent_position(upto)
                if not self._again:
                    return
                upto = self._latest
        finally:
            self._running = False

    async def _send(self, rows: list[tuple[int, str, str, int | None]]) -> None:
        queued: list[tuple[str, str, JsonDict]] = []
        for stream_id, user_id, device_id, prev in rows:
            hosts = await self._lists.hosts_sharing(user_id) - {self._server_name}
            if not hosts:
                continue
            if device_id == CROSS_SIGNING_DEVICE:
                cross = (await self._keys.cross_signing_keys([user_id], None)).get(user_id, {})
                content: JsonDict = {"user_id": user_id}
                for key_type in ("master", "self_signing"):
                    if key_type in cross:
                        content[f"{key_type}_key"] = cross[key_type]
                queued += [(h, "m.signing_key_update", content) for h in sorted(hosts)]
                continue
            keys = (await self._keys.device_keys({user_id: [device_id]})).get(
                user_id, {}).get(device_id)
            content = {"user_id": user_id, "device_id": device_id, "stream_id": stream_id,
                       "prev_id": [prev] if prev else [], "deleted": keys is None}
            if keys is not None:
                name = keys.pop("unsigned", {}).get("device_display_name")
                content["keys"] = keys
                if name is not None:
                    content["device_display_name"] = name
            queued += [(h, "m.device_list_update", content) for h in sorted(hosts)]
        if queued:
            await self._queue(queued)


class RemoteDeviceTracking:
    """Drops a remote user's cached devices once they share no room with a local user.

    Follows membership changes on the events stream (the engine names the
    member in `users`): a remote user who left, or whose last local room
    companion left, is no longer tracked, and a later query asks their server.
    """

    def __init__(self, lists: DeviceListStore, notifier: Notifier, server_name: str) -> None:
        self._lists = lists
        self._server_name = server_name
        self._stop = notifier.add_listener(self._on_change)

    def stop(self) -> None:
        self._stop()

    def _on_change(self, change: StreamChange) -> None:
        if change.stream != "events" or not change.users:
            return
        defer.ensureDeferred(self._check(set(change.users), set(change.rooms))).addErrback(
            lambda f: logger.error("remote device tracking failed: %s", f.getTraceback()))

    async def _check(self, users: set[str], rooms: set[str]) -> None:
        remote = {u for u in users if server_name_of(u) != self._server_name}
        if any(server_name_of(u) == self._server_name for u in users):
            # A local user's membership changed: every remote user of those rooms may be
            # left without a local companion.
            remote |= await self._lists.tracked_users_in_rooms(sorted(rooms))
        for user_id in sorted(remote):
            if await self._lists.remote_devices(user_id) is not None and \
                    not await self._lists.shares_room_with_local_user(user_id):
                await self._lists.drop_remote_devices(user_id)
