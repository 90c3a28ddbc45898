"""What a user may read of a room, and how it is served to them.

Every reading endpoint (/messages, /context, /event, /state, /relations,
/threads, /sync) goes through `RoomView`: who may read what is the access
module's answer (roost.rooms.access, shared with federation), turned here into
the client's Matrix errors; the shape of served events (redactions, edits,
thread summaries, reaction counts) is decided here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from roost.client_api.errors import MatrixError
from roost.client_api.event_format import (
    EncodedEvents,
    client_event,
    client_events_json,
    encode_events,
)
from roost.http.bodies import RawJson
from roost.rooms.access import EVENTS, STATE, RoomAccess
from roost.rooms.engine import LoadedEvent, NewEvent, RoomEngine, RoomError
from roost.rooms.engine_types import LoadedState
from roost.rooms.events import Event
from roost.rooms.hashing import CanonicalJSONError, canonical_json
from roost.storage.relations import RelationStore
from roost.storage.room_state import RoomStateStore

JsonDict = dict[str, Any]


def not_in_room() -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", "You are not allowed to see this room")


# LoadedState.derived key of the encoded member list (RoomView.serialize_members).
MEMBERS_JSON = "client_api.members_json"

class RoomView:
    def __init__(
        self, engine: RoomEngine, state: RoomStateStore, relations: RelationStore, clock: Any,
        forgotten: Callable[[str, str], Awaitable[bool]] | None = None,
        access: RoomAccess | None = None,
    ) -> None:
        self.engine = engine
        self.state = state
        self._relations = relations
        self._clock = clock
        # Every question of who may read what goes to the one access module;
        # `forgotten(user, room)` closes a forgotten room's history to its user.
        self.access = access or RoomAccess(engine, state, forgotten)

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def membership(self, room_id: str, user_id: str) -> str | None:
        """From the engine's cached head of the room: no query on the send path."""
        return await self.access.membership(room_id, user_id)

    async def require_joined(self, room_id: str, user_id: str) -> None:
        if await self.membership(room_id, user_id) != "join":
            raise MatrixError(403, "M_FORBIDDEN", f"{user_id} is not in room {room_id}")

    async def require_read(self, room_id: str, user_id: str, kind: str = EVENTS,
                           refuse_as_missing: bool = False) -> str:
        """What the user may read of the room through an endpoint of `kind` (the access
        module's CURRENT or AT_DEPARTURE); 404 for an unknown room, else 403, or 404
        where the spec has one answer for "not found" and "not allowed" (/event,
        /relations)."""
        if not await self.access.room_exists(room_id):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        granted = await self.access.room_read(room_id, user_id, kind)
        if granted is None:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found") if refuse_as_missing \
                else not_in_room()
        return granted

    async def readable_state(self, room_id: str, user_id: str,
                             kind: str = STATE) -> dict[tuple[str, str], str]:
        """The state the user may read (current, or as of their departure), or 404/403."""
        if not await self.access.room_exists(room_id):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        state = await self.access.readable_state(room_id, user_id, kind)
        if state is None:
            raise not_in_room()
        return state

    async def visible(self, room_id: str, user_id: str, events: list[LoadedEvent],
                      reader_history: tuple[bool, list[tuple[int, str]]] | None = None,
                      ) -> list[LoadedEvent]:
        """The events the user may see, in the order given (the access module's answer;
        `reader_history` as RoomAccess.visible_events takes it).

        This is the call /sync and the socket use for history visibility.
        """
        return await self.access.visible_events(room_id, user_id, events, reader_history)

    async def can_see_room(self, room_id: str, user_id: str) -> bool:
        """Whether the user may read the room's events at all (joined, departed after
        joining and not forgotten, or a world-readable room)."""
        return await self.access.room_read(room_id, user_id, EVENTS) is not None

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

    def serialize_at_once(self, events: list[LoadedEvent],
                          relation_kinds: Mapping[str, frozenset[str]] | None = None,
                          ) -> list[JsonDict] | None:
        """`serialize(events, user, relation_kinds=...)`'s answer when it needs no await (no
        event redacted, and `relation_kinds` given and naming no relation to aggregate:
        then no user is served anything of their own), else None. Without
        `relation_kinds`: as `serialize(..., with_relations=False)`."""
        if any(e.redacted_by for e in events) or (
                relation_kinds is not None and any(relation_kinds.get(e.event.event_id, True)
                                                   for e in events)):
            return None
        now = self.now_ms()
        return [client_event(loaded, now, None, None) for loaded in events]

    async def serialize_json(self, events: list[LoadedEvent], user_id: str,
                             relation_kinds: Mapping[str, frozenset[str]] | None = None,
                             ) -> RawJson | list[JsonDict]:
        """`serialize`'s answer encoded (event_format.client_events_json), for a list
        written into an answer as it is (a /messages page)."""
        redaction_ids = [e.redacted_by for e in events if e.redacted_by]
        redactions = await self.engine.get_events(redaction_ids) if redaction_ids else {}
        now = self.now_ms()
        relations = await self._aggregate(events, user_id, relation_kinds)
        served = {rid: client_event(loaded, now) for rid, loaded in redactions.items()}
        encoded = client_events_json(events, now, served, relations)
        return encoded if encoded is not None else await self.serialize(
            events, user_id, relation_kinds=relation_kinds)

    async def serialize_state(self, lists: list[list[LoadedEvent]]
                              ) -> list[RawJson | list[JsonDict]]:
        """Several lists of state events served as `serialize` serves them without
        relations, each encoded once (event_format.client_events_json): what /members,
        /state and a sync's `state` sections hold, thousands of events in a big room.
        The redactions of every list are read together."""
        redaction_ids = [e.redacted_by for events in lists for e in events if e.redacted_by]
        redactions = await self.engine.get_events(redaction_ids) if redaction_ids else {}
        now = self.now_ms()
        served = {rid: client_event(loaded, now) for rid, loaded in redactions.items()}
        out: list[RawJson | list[JsonDict]] = []
        for events in lists:
            encoded = client_events_json(events, now, served)
            out.append(encoded if encoded is not None else [
                client_event(e, now, served.get(e.redacted_by) if e.redacted_by else None)
                for e in events])
        return out

    async def serialize_members(self, state: LoadedState) -> RawJson | list[JsonDict]:
        """`serialize_state` of a room's whole member list as its head keeps it loaded,
        encoded once and kept with it (event_format.EncodedEvents): each /members answer
        only formats the ages in (bench/big_room.py). Served as usual when some member
        event is redacted."""
        encoded = state.derived.get(MEMBERS_JSON, False)
        if encoded is False:
            encoded = state.derived[MEMBERS_JSON] = encode_events(state.members_by_id)
        if encoded is None:
            return (await self.serialize_state([state.members_by_id]))[0]
        return cast(EncodedEvents, encoded).render(self.now_ms())

    async def _aggregate(self, events: list[LoadedEvent], user_id: str,
                         kinds: Mapping[str, frozenset[str]] | None = None) -> dict[str, JsonDict]:
        if kinds is not None:  # what the read found nothing relating to is left out first
            live = [e for e in events if kinds.get(e.event.event_id, True)
                    and not e.redacted_by and e.event.state_key is None]
            if not live:
                return {}
        else:
            live = [e for e in events if not e.redacted_by and e.event.state_key is None]
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
