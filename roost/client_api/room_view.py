"""What a user may read of a room, and how it is served to them.

Every reading endpoint (/messages, /context, /event, /state, /relations,
/threads) goes through `RoomView`, so history visibility and the shape of
served events (redactions, edits, thread summaries, reaction counts) are
decided in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from roost.client_api.errors import MatrixError
from roost.client_api.event_format import client_event
from roost.rooms.engine import LoadedEvent, NewEvent, RoomEngine, RoomError
from roost.rooms.events import Event
from roost.rooms.hashing import CanonicalJSONError, canonical_json
from roost.rooms.visibility import can_see_event
from roost.storage.relations import RelationStore
from roost.storage.room_state import RoomStateStore

JsonDict = dict[str, Any]


def not_in_room() -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", "You are not allowed to see this room")


class RoomView:
    def __init__(
        self, engine: RoomEngine, state: RoomStateStore, relations: RelationStore, clock: Any,
        forgotten: Callable[[str, str], Awaitable[bool]] | None = None,
    ) -> None:
        self.engine = engine
        self.state = state
        self._relations = relations
        self._clock = clock
        # (user, room) -> whether the user forgot the room: its history is then closed
        # to them (spec: /forget), unless it is world-readable or they join again.
        self._forgotten = forgotten

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def membership(self, room_id: str, user_id: str) -> str | None:
        """From the engine's cached head of the room: no query on the send path."""
        try:
            return await self.engine.membership(room_id, user_id)
        except RoomError:
            return None

    async def require_joined(self, room_id: str, user_id: str) -> None:
        if await self.membership(room_id, user_id) != "join":
            raise MatrixError(403, "M_FORBIDDEN", f"{user_id} is not in room {room_id}")

    async def visible(self, room_id: str, user_id: str, events: list[LoadedEvent]) -> list[LoadedEvent]:
        """The events the user may see, in the order given."""
        if not events:
            return []
        if self._forgotten is not None and await self._forgotten(user_id, room_id):
            return events if await self._world_readable_now(room_id) else []
        history = await self.state.state_history(room_id, "m.room.history_visibility", "")
        loaded = await self.engine.get_events([eid for _, eid in history])
        visibilities = [
            (pos, str(loaded[eid].event.content.get("history_visibility", "shared")))
            for pos, eid in history if eid in loaded
        ]
        memberships = await self.state.membership_history(room_id, user_id)
        return [
            e for e in events
            if e.stream_ordering is not None
            and can_see_event(visibilities, memberships, e.stream_ordering)
        ]

    async def can_see_room(self, room_id: str, user_id: str) -> bool:
        """Whether the user may read anything: a member once, or a world-readable room."""
        forgotten = self._forgotten is not None and await self._forgotten(user_id, room_id)
        if not forgotten and await self.state.membership_history(room_id, user_id):
            return True
        history = await self.state.state_history(room_id, "m.room.history_visibility", "")
        if not history:
            return False
        latest = (await self.engine.get_events([history[-1][1]]))[history[-1][1]]
        return latest.event.content.get("history_visibility") == "world_readable"

    async def check_not_duplicate_annotation(self, sender: str, event_type: str,
                                             content: JsonDict) -> None:
        """Spec: a second identical annotation by one user is M_DUPLICATE_ANNOTATION."""
        relates = content.get("m.relates_to")
        if not isinstance(relates, dict) or relates.get("rel_type") != "m.annotation":
            return
        target, key = relates.get("event_id"), relates.get("key")
        if isinstance(target, str) and isinstance(key, str) and \
                await self._relations.has_annotation(target, sender, event_type, key):
            raise MatrixError(400, "M_DUPLICATE_ANNOTATION", "You already sent this annotation")

    async def _world_readable_now(self, room_id: str) -> bool:
        history = await self.state.state_history(room_id, "m.room.history_visibility", "")
        if not history:
            return False
        latest = (await self.engine.get_events([history[-1][1]]))[history[-1][1]]
        return latest.event.content.get("history_visibility") == "world_readable"

    async def serialize(self, events: list[LoadedEvent], user_id: str,
                        with_relations: bool = True,
                        relation_kinds: Mapping[str, frozenset[str]] | None = None,
                        ) -> list[JsonDict]:
        """Serve events with redactions applied and their aggregated relations.

        `relation_kinds`, when the caller knows them (the sync window does),
        names the rel_types pointing at each event, so events with none are
        served without asking the database.
        """
        redaction_ids = [e.redacted_by for e in events if e.redacted_by]
        redactions = await self.engine.get_events(redaction_ids) if redaction_ids else {}
        now = self.now_ms()
        relations = await self._aggregate(events, user_id, relation_kinds) \
            if with_relations else {}
        result = []
        for loaded in events:
            redaction = None
            if loaded.redacted_by and loaded.redacted_by in redactions:
                redaction = client_event(redactions[loaded.redacted_by], now)
            result.append(client_event(loaded, now, redaction,
                                       relations.get(loaded.event.event_id)))
        return result

    async def _aggregate(self, events: list[LoadedEvent], user_id: str,
                         kinds: Mapping[str, frozenset[str]] | None = None) -> dict[str, JsonDict]:
        live = [e for e in events if not e.redacted_by and e.event.state_key is None]
        if kinds is not None:
            live = [e for e in live if kinds.get(e.event.event_id, True)]
            if not live:
                return {}
        found = await self._relations.aggregations(
            {e.event.event_id: e.event.sender for e in live}, user_id)
        edits, threads, reactions = found.edits, found.threads, found.reactions
        needed = list(edits.values()) + [t.latest_event_id for t in threads.values()]
        loaded = await self.engine.get_events(needed)
        now = self.now_ms()
        out: dict[str, JsonDict] = {}
        for event_id, edit_id in edits.items():
            if edit_id in loaded:
                out.setdefault(event_id, {})["m.replace"] = client_event(loaded[edit_id], now)
        for root, summary in threads.items():
            if summary.latest_event_id in loaded:
                out.setdefault(root, {})["m.thread"] = {
                    "latest_event": client_event(loaded[summary.latest_event_id], now),
                    "count": summary.count,
                    "current_user_participated": summary.participated,
                }
        for target, counts in reactions.items():
            out.setdefault(target, {})["m.annotation"] = {
                "chunk": [{"type": t, "key": k, "count": c} for t, k, c in counts]
            }
        return out


def check_canonical(content: JsonDict) -> None:
    """Refuse content that canonical JSON cannot carry (floats, integers past 2**53)."""
    try:
        canonical_json(content)
    except CanonicalJSONError as e:
        raise MatrixError(400, "M_BAD_JSON", f"Content is not canonical JSON: {e}") from None


async def append_event(engine: RoomEngine, room_id: str, new_event: NewEvent) -> Event:
    """Append through the engine, turning a refusal into the Matrix error the client sees.

    Content that canonical JSON cannot carry comes back from the engine as
    400 M_BAD_JSON, found while the event is hashed (no separate walk here).
    """
    try:
        return await engine.append(room_id, new_event)
    except RoomError as e:
        raise MatrixError(e.status, e.errcode, e.message) from None
