"""The parts of a sync from the streams beside room events: typing and receipts (a
room's `ephemeral`), account data and presence, batched over the user's rooms.

Each reads exactly its stream's range (since, now] of the request's tokens.
"""

from __future__ import annotations

from typing import Any, Protocol

from roost.client_api.receipts import Receipts
from roost.client_api.stream_token import StreamToken
from roost.client_api.sync_filter import SyncFilter
from roost.client_api.sync_room_state import RoomPlan
from roost.client_api.typing import TypingTracker
from roost.storage.sync_data import AccountDataStore
from roost.storage.sync_queries import SyncQueries

JsonDict = dict[str, Any]
SyncToken = StreamToken


class Presence(Protocol):
    @property
    def current(self) -> int: ...
    def changes_since(self, position: int, users: set[str]) -> list[JsonDict]: ...
    def changed_users(self, position: int) -> set[str]: ...


class SyncEphemeral:
    def __init__(self, typing: TypingTracker, receipts: Receipts,
                 account_data: AccountDataStore, presence: Presence | None,
                 queries: SyncQueries) -> None:
        self._typing = typing
        self._receipts = receipts
        self._account_data = account_data
        self._presence = presence
        self._queries = queries

    async def add(self, plans: dict[str, RoomPlan], joined: list[str], user_id: str,
                             since: SyncToken | None, now: SyncToken,
                             account: list[tuple[str, str, JsonDict]],
                             filt: SyncFilter) -> None:
        ephemeral_filter, data_filter = filt.ephemeral, filt.room_account_data
        want_typing = ephemeral_filter.wants_type("m.typing") and ephemeral_filter.limit != 0
        receipts: dict[str, JsonDict] = {}
        if (since is None or since.receipts < now.receipts) and \
                ephemeral_filter.wants_type("m.receipt") and ephemeral_filter.limit != 0:
            receipts = await self._receipts.events_since(
                joined, since.receipts if since else 0, now.receipts, user_id)
        room_data: dict[str, list[JsonDict]] = {}
        for room, data_type, content in account:
            if room and data_filter.wants_room(room) and data_filter.wants_type(data_type):
                room_data.setdefault(room, []).append({"type": data_type, "content": content})
        for room_id in joined:
            ephemeral = []
            if not ephemeral_filter.wants_room(room_id):
                pass
            elif want_typing and (since is None and self._typing.typing_users(room_id) or (
                    since is not None and self._typing.changed_since(room_id, since.typing))):
                ephemeral.append(self._typing.event(room_id))
            if room_id in receipts and ephemeral_filter.wants_room(room_id):
                ephemeral.append(receipts[room_id])
            ephemeral = ephemeral_filter.cut(ephemeral)
            if room_id in room_data:
                room_data[room_id] = data_filter.cut(room_data[room_id])
            if not ephemeral and room_id not in room_data and room_id not in plans:
                continue
            plan = plans.setdefault(room_id, RoomPlan([], False, f"s{now.events}"))
            plan.ephemeral = ephemeral
            plan.account_data = room_data.get(room_id, [])

    async def account_changes(self, user_id: str, since: SyncToken | None,
                               now: SyncToken) -> list[tuple[str, str, JsonDict]]:
        if since is not None and since.account_data >= now.account_data:
            return []
        return await self._account_data.since(user_id, since.account_data if since else 0,
                                              now.account_data)

    def presence_at_once(self, user_id: str, since: SyncToken,
                          filt: SyncFilter) -> list[JsonDict] | None:
        """`presence_events` of an incremental sync when no other user's presence changed
        since (no members to look for), else None."""
        presence = self._presence
        if presence is None or not filt.include_presence or since.presence == presence.current:
            return []
        if presence.changed_users(since.presence) - {user_id}:
            return None
        changes = presence.changes_since(since.presence, {user_id})
        return filt.presence.cut([c for c in changes if filt.presence.wants(
            c.get("type", "m.presence"), c.get("sender"))])

    async def presence_events(self, user_id: str, memberships: dict[str, str],
                               since: SyncToken | None, filt: SyncFilter) -> list[JsonDict]:
        if self._presence is None or not filt.include_presence:
            return []
        if since is not None and since.presence == self._presence.current:
            return []  # (a token from before a restart is ahead: the tracker resends all)
        position = since.presence if since else 0
        # Only those whose presence changed are looked for among the user's rooms' members
        # (a newcomer to a room of 2,000 members whose presence has not changed reads none).
        others = self._presence.changed_users(position) - {user_id}
        users = {user_id} | (await self._queries.joined_users(
            [r for r, m in memberships.items() if m == "join"], among=others) if others else set())
        changes = self._presence.changes_since(position, users)
        return filt.presence.cut([c for c in changes if filt.presence.wants(
            c.get("type", "m.presence"), c.get("sender"))])
