"""The device_lists stream: every change of a user's devices or cross-signing keys.

A change takes one position per device (so the m.device_list_update EDUs
built from it each get their own `stream_id`), is written, and is announced
on the notifier (by the stream, once visible) with the rooms the user is joined to: every user sharing one
wakes, and their next /sync lists the user in `device_lists.changed`. The
federation's DeviceListSender follows the same announcements.
"""

from __future__ import annotations

import logging

from twisted.internet import defer

from roost.client_api.errors import fenced_as_unavailable
from roost.storage.device_lists import DeviceListStore
from roost.storage.streams import StreamIdGenerator

logger = logging.getLogger(__name__)


class DeviceLists:
    def __init__(self, store: DeviceListStore, stream: StreamIdGenerator) -> None:
        self.store = store
        self.stream = stream  # announced on the notifier as "device_lists"

    async def changed(self, user_id: str, device_ids: list[str]) -> None:
        if not device_ids:
            return
        rooms = await self.store.joined_rooms(user_id)
        with fenced_as_unavailable():  # as the other streams' writes: 503, try again
            positions = self.stream.allocate(len(device_ids))
            written = False
            try:
                await self.store.add_changes([(p, user_id, d) for p, d in
                                              zip(positions, device_ids, strict=True)],
                                             self.stream.fence)
                written = True
            finally:
                # The stream announces the change once every earlier position is written.
                self.stream.finish(positions, rooms if written else (),
                                   [user_id] if written else ())

    async def account_deactivated(self, user_id: str) -> None:
        """A deactivated account's devices went with it (and their keys): its cross-signing
        keys go too, and every device ever announced is announced again, now gone."""
        devices = await self.store.forget_user_keys(user_id)
        await self.changed(user_id, devices + [""])

    def devices_deleted(self, user_id: str, device_ids: list[str]) -> None:
        """DeviceStore's listener: announce deleted devices (their keys went with them)."""
        defer.ensureDeferred(self.changed(user_id, device_ids)).addErrback(
            lambda f: logger.error("announcing deleted devices of %s failed: %s", user_id,
                                   f.getTraceback()))

    def devices_renamed(self, user_id: str, device_ids: list[str]) -> None:
        """DeviceStore's listener: a new display name is announced like new keys are."""
        self.devices_deleted(user_id, device_ids)
