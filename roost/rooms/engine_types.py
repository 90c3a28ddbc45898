"""The values the room engine takes and gives, shared by its local and remote paths.

Kept apart from engine.py so that the remote-event work (remote_ingest.py) and
the engine can both use them without importing each other.
"""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, cast

from roost.rooms.events import Event, kept_fields, parse_canonical, shared
from roost.rooms.versions import RoomVersion, get_room_version
from roost.storage.events import EventRow, StoredEvent
from roost.storage.push import PushWrite

logger = logging.getLogger(__name__)

StateKey = tuple[str, str]
# A full state snapshot is written after this many deltas, bounding reads.
MAX_STATE_CHAIN = 50


class RoomError(Exception):
    """Why an append was refused, in Matrix terms."""

    def __init__(self, status: int, errcode: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message


class IdAllocator:
    """State group ids, allocated in memory from the table's maximum (single writer)."""

    def __init__(self, current_max: int) -> None:
        self._next = current_max + 1

    def next(self) -> int:
        value = self._next
        self._next += 1
        return value


@dataclass(frozen=True)
class NewEvent:
    """What a caller asks to append; the engine fills in the graph fields."""

    sender: str
    type: str
    content: dict[str, Any]
    state_key: str | None = None
    redacts: str | None = None
    txn_key: tuple[str, str, str] | None = None  # (user, device, txn id)


class LoadedEvent(NamedTuple):
    """An event read back from storage, with what serving it needs.

    A named tuple, not a frozen dataclass: built for every event of every page read
    (about a fifth of the time a frozen dataclass takes to build) and held for every
    state event of a cached room head (72 bytes instead of about 150 with its dict)."""

    event: Event
    stream_ordering: int | None
    redacted_by: str | None
    rejected: bool


class LoadedState(NamedTuple):
    """A head's whole current state as readers get it (RoomHead.loaded_state): built once
    per head when every state event is loaded, so a big room's initial sync and /members
    take it ready instead of looking 2,000 ids up on every request (bench/big_room.py)."""

    in_key_order: list[LoadedEvent]  # the order of RoomHead.sorted_state (a sync's `state`)
    members_by_id: list[LoadedEvent]  # m.room.member events in event id order (/members)
    last_position: int  # the highest stream position among them (0 if none has one)
    # What readers derive from these events alone, kept with them (the client API's
    # encoded /members list: room_view.RoomView.serialize_members).
    derived: dict[str, Any]


@dataclass
class RoomHead:
    """A room's tip as the engine appends to it: cached per room in this process."""

    version: RoomVersion
    state: dict[StateKey, str]
    state_events: dict[StateKey, Event]
    extremities: list[str]
    depth: int
    state_group: int | None
    chain_length: int
    # (stream position, history_visibility) of each change so far, read on first use: a
    # copy keeps it, and each persist that stores an m.room.history_visibility event
    # leaves it None on the head that follows (see RoomEngine.visibility_changes).
    visibility: list[tuple[int, str]] | None = None
    # State event id -> the event as readers get it (its position, the redaction that
    # applies), filled by big current-state reads (event_reader.py). Each persist drops
    # the entries it may change: its redactions' targets, remote events it stored.
    loaded: dict[str, LoadedEvent] | None = None
    # event id -> state event, built on first use (a copy starts without it).
    _by_id: dict[str, Event] | None = field(default=None, init=False, compare=False,
                                             repr=False)
    # The state in key order, and its members counted: built on first use by the big
    # reads (a sync's full state and summary: bench/big_room.py); a copy starts without.
    _sorted: list[tuple[StateKey, Event]] | None = field(default=None, init=False,
                                                         compare=False, repr=False)
    _members: MembersOverview | None = field(default=None, init=False, compare=False,
                                             repr=False)
    # Built from `loaded` on first use (loaded_state); a copy starts without it unless it
    # shares both the state and `loaded` (a batch of messages), and forget_loaded drops
    # it with the entries it drops.
    _loaded_state: LoadedState | None = field(default=None, init=False, compare=False,
                                              repr=False)

    def copy(self, share_state: bool = False, share_loaded: bool = False) -> RoomHead:
        """A head to change without changing this one. `share_state`, `share_loaded`: the
        copy holds this head's own state dicts, or loaded dict, which the caller will not
        change (a batch with no state event, or no redaction either: see
        RoomEngine._append_batch). Heads are replaced, never changed in place, once
        cached; copying a big room's state for every message cost O(members)."""
        # Built field by field: dataclasses.replace looks the fields up on every call
        # (two copies a batch, on every send). A new field must be added here too
        # (tests/rooms/test_engine_types.py compares the two).
        loaded = self.loaded
        head = RoomHead(
            self.version,
            self.state if share_state else dict(self.state),
            self.state_events if share_state else dict(self.state_events),
            list(self.extremities), self.depth, self.state_group, self.chain_length,
            self.visibility,
            loaded if share_loaded or loaded is None else dict(loaded))
        if share_state and share_loaded:  # the same state, served the same: kept for
            head._loaded_state = self._loaded_state  # every message of a big room
        return head

    def forget_loaded(self, events: Iterable[Event], stored: bool = False) -> None:
        """Drop what `events`, just persisted, may change of the kept loaded state: the
        targets of redactions among them, and (`stored`: remote events, which may
        include an outlier now given a position) the events themselves."""
        if self.loaded is None:
            return
        for event in events:
            if stored:
                self.loaded.pop(event.event_id, None)
                self._loaded_state = None
            target = event.redacts
            if target is not None:
                self.loaded.pop(target, None)
                self._loaded_state = None

    def state_by_id(self) -> dict[str, Event]:
        if self._by_id is None:
            self._by_id = {e.event_id: e for e in self.state_events.values()}
        return self._by_id

    def sorted_state(self) -> list[tuple[StateKey, Event]]:
        """The current state in key order (the order a sync's `state` lists it in)."""
        if self._sorted is None:
            events = self.state_events
            self._sorted = [(key, events[key]) for key in sorted(events)]
        return self._sorted

    def loaded_state(self) -> LoadedState | None:
        """The current state as `loaded` holds it, kept until the state (a new head) or
        `loaded` (forget_loaded) changes; None while some state event is not loaded yet
        (RoomEngine.current_state_complete loads them first)."""
        if self._loaded_state is None and self.loaded is not None:
            kept = self.loaded
            in_order = [kept.get(e.event_id) for _, e in self.sorted_state()]
            if None in in_order:
                return None
            ready = cast("list[LoadedEvent]", in_order)
            members = sorted((e for e in ready if e.event.type == "m.room.member"),
                             key=_event_id_of)
            last = max((e.stream_ordering or 0 for e in ready), default=0)
            self._loaded_state = LoadedState(ready, members, last, {})
        return self._loaded_state

    def members(self) -> MembersOverview:
        """The room's members counted by membership (a sync's room summary)."""
        if self._members is None:
            self._members = MembersOverview.of(self.state_events)
        return self._members


def _event_id_of(loaded: LoadedEvent) -> str:
    return loaded.event.event_id


HERO_CANDIDATES = 6  # a room summary names at most five heroes, never the reader


@dataclass(frozen=True)
class MembersOverview:
    """A room's members at one head: the counts a room summary gives, and the first few
    current (joined or invited) and former (left or banned) members by user id, from
    which a summary picks its heroes (leaving out the reader)."""

    joined: int
    invited: int
    first_current: list[str]
    first_former: list[str]

    @staticmethod
    def of(state: dict[StateKey, Event]) -> MembersOverview:
        by_membership: dict[str, list[str]] = {}
        for (event_type, state_key), event in state.items():
            if event_type == "m.room.member":
                membership = event.content.get("membership")
                if isinstance(membership, str):
                    by_membership.setdefault(membership, []).append(state_key)
        joined, invited = by_membership.get("join", []), by_membership.get("invite", [])
        former = by_membership.get("leave", []) + by_membership.get("ban", [])
        return MembersOverview(len(joined), len(invited),
                               heapq.nsmallest(HERO_CANDIDATES, joined + invited),
                               heapq.nsmallest(HERO_CANDIDATES, former))


def event_from_storage(stored: StoredEvent) -> Event:
    """Rebuild an Event from its stored canonical JSON without re-hashing it."""
    version = get_room_version(stored.room_version)
    return Event(fields=kept_fields(parse_canonical(stored.pdu_json, version.strict_canonical_json)),
                 version=version, event_id=stored.event_id, room_id=shared(stored.room_id),
                 canonical_bytes=canonical_of(stored))


def canonical_of(stored: StoredEvent) -> bytes:
    """A row's canonical JSON as bytes: a row read from PostgreSQL holds it as a str, a
    row the sync window built from a local send the event's own bytes (sync_local.py)."""
    pdu_json = stored.pdu_json
    return pdu_json if type(pdu_json) is bytes else pdu_json.encode("utf-8")


HISTORY_VISIBILITY = "m.room.history_visibility"


def changes_visibility(events: Iterable[Event]) -> bool:
    """Whether any of the events is an m.room.history_visibility state event (one that,
    once stored, may change a room's visibility history)."""
    return any(e.type == HISTORY_VISIBILITY and e.state_key == "" for e in events)


def membership_of(event: Event) -> str | None:
    if event.type != "m.room.member":
        return None
    value = event.content.get("membership")
    return value if isinstance(value, str) else None


def relation_of(event: Event) -> tuple[str, str, str | None] | None:
    relates = event.content.get("m.relates_to")
    if not isinstance(relates, dict):
        return None
    target, rel_type = relates.get("event_id"), relates.get("rel_type")
    if not isinstance(target, str) or not isinstance(rel_type, str):
        return None
    key = relates.get("key") if rel_type == "m.annotation" else None
    return target, rel_type, key if isinstance(key, str) else None


def event_row(event: Event, position: int | None, group: int | None, *,
              txn_key: tuple[str, str, str] | None = None, rejected_reason: str | None = None,
              outlier: bool = False, soft_failed: bool = False) -> EventRow:
    """An event as storage persists it, local or remote."""
    return EventRow(
        event_id=event.event_id, room_id=event.room_id, type=event.type,
        state_key=event.state_key, sender=event.sender, depth=event.depth,
        origin_server_ts=event.origin_server_ts, pdu_json=event.canonical_bytes.decode("utf-8"),
        prev_event_ids=list(event.prev_event_ids), auth_event_ids=list(event.auth_event_ids),
        stream_ordering=position, state_group=group, membership=membership_of(event),
        relation=relation_of(event), redacts=event.redacts, txn_key=txn_key,
        rejected_reason=rejected_reason, outlier=outlier, soft_failed=soft_failed,
    )


# Parsed events kept by id, so a read serves an event without parsing its JSON again.
#
# Reading history (/messages, /context, /sync timelines, /search) parses each
# event's stored PDU JSON into an Event; for a 1,000-message history that
# parse was the largest per-event cost of a page (bench/big_room.py
# --only pagination). Stored PDU JSON never changes (a redaction is applied
# when serving, from `redacted_by`), and an Event is read-only, so a parsed
# Event can be shared by every reader. The cache is bounded (least recently
# used forgotten first) and checks the stored JSON is the event's canonical JSON
# before reusing an entry, so it can never serve anything but what storage holds.
# 1,000 like the sync window: bench/memory.py measured 10,000 parsed events at about
# +24 MiB of RSS after the sync workloads (109 MiB against the 80 MiB target).
EVENT_CACHE_SIZE = 1_000


class EventCache:
    """event id -> the Event parsed from its stored PDU JSON, LRU-bounded. The JSON itself
    is not kept: an Event's canonical bytes are that JSON, encoded (about 0.6 KiB an
    event less to hold).

    The engine's newest local sends (`recent`: RecentLocalEvents, which holds them for the
    stream's followers anyway) are served from there by stream position, not copied into
    the cache: a burst of sends no longer fills it with events read by no one, each about
    1.9 KiB (bench/memory.py: 5,000 sends kept the last 1,000 alive). A local send read
    after it left `recent` is parsed from its row once, as any other event."""

    def __init__(self, size: int = EVENT_CACHE_SIZE,
                 recent: RecentLocalEvents | None = None) -> None:
        self._size = max(0, size)
        self._entries: OrderedDict[str, Event] = OrderedDict()
        self._recent = recent._events if recent is not None else {}

    def event(self, stored: StoredEvent) -> Event:
        """The Event of a stored row, parsed once while it stays cached."""
        entry = self._entries.get(stored.event_id)
        if entry is not None and entry.room_id == stored.room_id \
                and entry.version.identifier == stored.room_version \
                and entry.canonical_bytes == canonical_of(stored):
            self._entries.move_to_end(stored.event_id)
            return entry
        held = self._held(stored)
        if held is not None:
            return held
        event = event_from_storage(stored)
        self._put(event)
        return event

    def loaded(self, stored: list[StoredEvent]) -> list[LoadedEvent]:
        """`event` for each row, as served (LoadedEvent): one loop without a call per
        event, for history pages (100 events a /messages page)."""
        entries = self._entries
        out = []
        for row in stored:
            entry = entries.get(row.event_id)
            if entry is not None and entry.room_id == row.room_id \
                    and entry.version.identifier == row.room_version \
                    and entry.canonical_bytes == canonical_of(row):
                entries.move_to_end(row.event_id)
            else:
                entry = self._held(row)
                if entry is None:
                    entry = event_from_storage(row)
                    self._put(entry)
            out.append(LoadedEvent(entry, row.stream_ordering, row.redacted_by,
                                   row.rejected_reason is not None))
        return out

    def _held(self, stored: StoredEvent) -> Event | None:
        """The local send `recent` holds at the row's position, if it is the row's event as
        stored: the same id, room and version, its canonical JSON the row's, and nothing
        in `unsigned` (storage holds none; a reader must get none)."""
        found = self._recent.get(stored.stream_ordering) if stored.stream_ordering else None
        if found is None:
            return None
        event = found[1]
        if event.event_id != stored.event_id or event.room_id != stored.room_id \
                or event.version.identifier != stored.room_version or event.unsigned \
                or event.canonical_bytes != canonical_of(stored):
            return None
        return event

    def _put(self, event: Event) -> None:
        if self._size == 0:
            return
        self._entries[event.event_id] = event
        self._entries.move_to_end(event.event_id)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


RECENT_LOCAL_EVENTS = 256  # push is a few batches behind at most; older ranges are read
# (stream position, the event, its state group): a local send as the stream's followers see it
RecentEvent = tuple[int, Event, "int | None"]


class PersistCompanion(Protocol):
    """Work stored in the persist transaction of a batch of local messages: push
    evaluation (push/evaluator.py), which otherwise writes a transaction of its own per
    batch after the persist. `prepare` is called just before the persist, with the state
    the messages were built on; when it gives a write, exactly one of `committed` (after
    the commit, before the stream announces the events) or `failed` follows."""

    def prepare(self, room_id: str, state_events: Mapping[StateKey, Event],
                events: list[Event], positions: list[int]) -> PushWrite | None: ...

    def committed(self, write: PushWrite) -> None: ...

    def failed(self, write: PushWrite) -> None: ...


def guarded(call: Callable[..., Any], *args: Any) -> Any:
    """A companion's call (PersistCompanion), whose failure must not leave a batch's stream
    positions unfinished (the stream would stop there): logged, and None."""
    try:
        return call(*args)
    except Exception:
        logger.exception("persist companion %s failed", getattr(call, "__name__", call))
        return None


class RecentLocalEvents:
    """The newest events this engine persisted for local sends, by stream position.

    A follower of the events stream that is just behind (push evaluation, the
    federation sender) takes a range of events from here instead of reading back
    what was just written (a transaction per message under fan-out). It is
    answered only when every position of the range is here: a position taken by an
    event persisted otherwise (a remote one, another process's) or by none (a batch
    that failed) sends the reader to storage.
    """

    def __init__(self, size: int = RECENT_LOCAL_EVENTS) -> None:
        self._size = size
        self._events: dict[int, RecentEvent] = {}  # insertion order: oldest first

    def add(self, positions: list[int], events: list[Event], groups: list[int | None]) -> None:
        for position, event, group in zip(positions, events, groups, strict=True):
            self._events[position] = (position, event, group)
        while len(self._events) > self._size:
            del self._events[next(iter(self._events))]

    def between(self, after: int, upto: int) -> list[RecentEvent] | None:
        """(position, event, state group) for every position in (after, upto], or None if
        one is missing."""
        if upto - after > len(self._events):
            return None
        found = []
        for position in range(after + 1, upto + 1):
            event = self._events.get(position)
            if event is None:
                return None
            found.append(event)
        return found
