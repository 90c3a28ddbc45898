"""The device_lists stream: every change of a user's devices or cross-signing keys.

A change takes one position per device (so the m.device_list_update EDUs
built from it each get their own `stream_id`), is written, and is announced
on the notifier with the rooms the user is joined to: every user sharing one
wakes, and their next /sync lists the user in `device_lists.changed`. The
federation's DeviceListSender follows the same announcements.
"""

from __future__ import annotations

import logging

from twisted.internet import defer

from roost.storage.device_lists import DeviceListStore
from roost.storage.notifier import Notifier
from roost.storage.streams import StreamIdGenerator

logger = logging.getLogger(__name__)


class DeviceLists:
    def __init__(self, store: DeviceListStore, stream: StreamIdGenerator,
                 notifier: Notifier) -> None:
        self.store = store
        self.stream = stream
        self._notifier = notifier

    async def changed(self, user_id: str, device_ids: list[str]) -> None:
        if not device_ids:
            return
        positions = self.stream.allocate(len(device_ids))
        try:
            await self.store.add_changes([(p, user_id, d) for p, d in
                                          zip(positions, device_ids, strict=True)])
        finally:
            self.stream.finish(positions)
        rooms = await self.store.joined_rooms(user_id)
        self._notifier.notify("device_lists", self.stream.current, rooms=rooms, users=[user_id])

    def devices_deleted(self, user_id: str, device_ids: list[str]) -> None:
        """DeviceStore's listener: announce deleted devices (their keys went with them)."""
        defer.ensureDeferred(self.changed(user_id, device_ids)).addErrback(
            lambda f: logger.error("announcing deleted devices of %s failed: %s", user_id,
                                   f.getTraceback()))
