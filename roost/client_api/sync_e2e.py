"""The end-to-end parts of /sync: to_device, device_lists, one-time key counts, fallback keys.

Each is a top-level section built from the request's `since` and `now`
tokens (their `to_device` and `device_lists` positions):

- `to_device`: the device's inbox up to `now`. A sync whose `since` token
  is at position P acknowledges everything up to P, which is deleted first:
  a message is kept until the sync after the one that delivered it.
- `device_lists`: users sharing a room whose devices changed in
  (since, now], users who newly share a room, and those who stopped sharing
  every room (`left`); left out of an initial sync.
- `device_one_time_keys_count` and `device_unused_fallback_key_types`: always,
  for the syncing device.
"""

from __future__ import annotations

from typing import Any, Protocol

from roost.client_api.sync_extensions import LATER
from roost.storage.device_inbox import DeviceInboxStore
from roost.storage.device_lists import DeviceListStore
from roost.storage.e2e_keys import E2eKeyStore

JsonDict = dict[str, Any]


class _Request(Protocol):
    user_id: str
    device_id: str | None
    since: Any
    now: Any


class E2eSync:
    def __init__(self, inbox: DeviceInboxStore, lists: DeviceListStore,
                 keys: E2eKeyStore, events_position: int = 0) -> None:
        self._inbox = inbox
        self._lists = lists
        self._keys = keys
        # (user, device) -> position acknowledged (and deleted up to) in this process: a
        # sync at the same `since` again deletes nothing new, so it is not asked.
        self._acked: dict[tuple[str, str], int] = {}
        # The events position of the newest membership change announced (from start:
        # the position then, as nothing earlier is known): a sync from a token at or
        # after it has no joins or leaves to look for.
        self.last_membership = events_position

    def on_change(self, change: Any) -> None:
        """The notifier's cache hook: the engine names the member of a membership event."""
        if change.stream == "events" and change.users:
            self.last_membership = max(self.last_membership, change.position)

    async def to_device(self, req: _Request) -> JsonDict | None:
        if req.device_id is None:
            return None
        key = (req.user_id, req.device_id)
        if req.since is not None and req.since.to_device > self._acked.get(key, 0):
            await self._inbox.acknowledge(req.user_id, req.device_id, req.since.to_device)
            if len(self._acked) >= 100_000:
                self._acked.clear()
            self._acked[key] = req.since.to_device
        if req.since is not None and req.since.to_device >= req.now.to_device:
            return {"events": []}
        messages, _ = await self._inbox.messages(req.user_id, req.device_id, req.now.to_device,
                                                 limit=100_000)
        return {"events": messages}

    async def device_lists(self, req: _Request) -> JsonDict | None:
        if req.since is None:
            return None
        since, now = req.since, req.now
        after_events = max(since.events, 0)
        if since.device_lists >= now.device_lists and (
                since.events >= now.events or self.last_membership <= after_events):
            return {"changed": [], "left": []}  # (changes_for would read nothing either)
        upto_events = now.events if self.last_membership > after_events else after_events
        changed, left = await self._lists.changes_for(
            req.user_id, since.device_lists, now.device_lists, after_events, upto_events)
        return {"changed": sorted(changed), "left": sorted(left)}

    async def one_time_keys_count(self, req: _Request) -> JsonDict | None:
        if req.device_id is None:
            return None
        return (await self._keys.sync_counts(req.user_id, req.device_id))[0]

    async def unused_fallback_key_types(self, req: _Request) -> list[str] | None:
        if req.device_id is None:
            return None
        return (await self._keys.sync_counts(req.user_id, req.device_id))[1]


    # -- the same, without waiting (SyncBuilder.build_at_once), or LATER -------------

    def to_device_at_once(self, req: _Request) -> Any:
        if req.device_id is None:
            return None
        if req.since is None or req.since.to_device > self._acked.get((req.user_id,
                                                                       req.device_id), 0):
            return LATER  # (an acknowledgement to store)
        if req.since.to_device >= req.now.to_device:
            return {"events": []}
        return LATER

    def device_lists_at_once(self, req: _Request) -> Any:
        if req.since is None:
            return None
        since, now = req.since, req.now
        if since.device_lists >= now.device_lists and (
                since.events >= now.events or self.last_membership <= max(since.events, 0)):
            return {"changed": [], "left": []}
        return LATER

    def one_time_keys_count_at_once(self, req: _Request) -> Any:
        if req.device_id is None:
            return None
        held = self._keys.held_sync_counts(req.user_id, req.device_id)
        return LATER if held is None else held[0]

    def unused_fallback_key_types_at_once(self, req: _Request) -> Any:
        if req.device_id is None:
            return None
        held = self._keys.held_sync_counts(req.user_id, req.device_id)
        return LATER if held is None else held[1]


def device_lists_news(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.get("changed") or value.get("left"))


def never_news(_: Any) -> bool:
    return False
