"""What changed for a user between two sync tokens: the body of /sync and of socket pushes.

A token names a position in each stream (events, typing, receipts, account
data, presence). The builder reads everything between the `since` token and
the current positions, taken once at the start, so the next token covers
exactly what was served: nothing skipped, nothing repeated.

Each room's `state`, `summary` and an invite's or knock's stripped state come
from sync_room_state.py; what other areas add (e2ee sections, unread counts)
is registered through sync_extensions.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from roost.client_api.receipts import Receipts
from roost.client_api.room_view import RoomView
from roost.client_api.stream_token import STREAMS, StreamToken
from roost.client_api.sync_at_once import IgnoringCache, WakeAnswers, ignoring
from roost.client_api.sync_ephemeral import Presence, SyncEphemeral
from roost.client_api.sync_extensions import (
    CORE_KEYS,
    CORE_ROOM_KEYS,
    RoomField,
    RoomFieldAtOnce,
    RoomFieldBuild,
    Section,
    SectionAtOnce,
    SectionBuild,
    SyncRequest,
    any_value,
)
from roost.client_api.sync_filter import SyncFilter
from roost.client_api.sync_local import local_ranges
from roost.client_api.sync_news import MAX_INCREMENTAL_EVENTS, NewsWindow
from roost.client_api.sync_room_state import RoomPlan, SyncRoomState
from roost.client_api.sync_serialize import SyncSerializer
from roost.client_api.sync_shared import EMPTY, SharedRoom, SharedRooms
from roost.client_api.sync_summary import SUMMARY_TYPES
from roost.client_api.typing import TypingTracker
from roost.http.bodies import RawJson
from roost.rooms.engine import LoadedEvent, RoomEngine
from roost.storage.events import StoredEvent, SyncEventStore
from roost.storage.notifier import Notifier
from roost.storage.room_state import UserRoomsCache
from roost.storage.streams import StreamIdGenerator
from roost.storage.sync_data import AccountDataStore
from roost.storage.sync_queries import RecentEvents, SyncQueries

JsonDict = dict[str, Any]
SyncToken = StreamToken  # the name this module used before the one token type
IGNORED_USERS = "m.ignored_user_list"
MAX_REMEMBERED_USERS = 100_000
FIRST_POSITION = -(1 << 62)  # before every position, backfilled history included


class SyncBuilder:
    def __init__(
        self, engine: RoomEngine, view: RoomView, events: SyncEventStore,
        event_stream: StreamIdGenerator, typing: TypingTracker, receipts: Receipts,
        account_data: AccountDataStore, account_stream: StreamIdGenerator,
        presence: Presence | None, user_rooms: UserRoomsCache,
        queries: SyncQueries,
        remote_invite_state: Callable[[str, str], Awaitable[list[Any] | None]] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self._notifier = notifier
        self._last_version = -1  # the notifier's version `_last` was computed at
        self._engine = engine
        self._view = view
        self._events = events
        self._event_stream = event_stream
        self._account_data = account_data
        self._account_stream = account_stream
        self._user_rooms = user_rooms
        self._queries = queries
        self._state = SyncRoomState(engine, view, queries, remote_invite_state)
        self._ephemeral = SyncEphemeral(typing, receipts, account_data, presence, queries)
        self._recent = RecentEvents(self._queries, events,
                                    local=local_ranges(engine.recent_local_events))
        self._serializer = SyncSerializer(view, queries, self._recent)
        self._shared = SharedRooms()
        self._window = NewsWindow(self._recent)  # the newest range's events by room
        presence_now = (lambda: presence.current) if presence is not None else (lambda: 0)
        self._positions: dict[str, Callable[[], int]] = {
            "events": lambda: event_stream.current,
            "typing": lambda: typing.position,
            "receipts": lambda: receipts.stream.current,
            "account_data": lambda: account_stream.current,
            "presence": presence_now,
        }
        self._currents = _in_token_order(self._positions)
        self._last: tuple[tuple[int, ...], SyncToken, str] = ((), StreamToken(), str(StreamToken()))
        self._sections: list[Section] = []
        self._ignored: dict[str, frozenset[str]] = {}  # user -> ignored users, as last seen
        self._ignoring: IgnoringCache = {}
        self._at_once = WakeAnswers(self)
        self._room_fields: list[RoomField] = []
        # What a build up to an events position waits for (see `prepare`).
        self._ready: list[Callable[[int], Awaitable[Any]]] = []
        # Global account data an initial sync serves when the user has none stored.
        self._default_account_data: dict[str, Callable[[str], Awaitable[JsonDict]]] = {}

    # -- extension points (see sync_extensions.py) ---------------------------------

    def add_stream(self, name: str, current: Callable[[], int]) -> None:
        """Put stream `name` (a StreamToken field) in every token, at `current()`."""
        if name not in STREAMS or name in self._positions:
            raise ValueError(f"{name} is not a StreamToken field or is already registered")
        self._positions[name] = current
        self._currents = _in_token_order(self._positions)
        self._last_version = -1

    def add_section(self, key: str, build: SectionBuild,
                    is_news: Callable[[Any], bool] = any_value,
                    at_once: SectionAtOnce | None = None) -> None:
        """A top-level key of the body, computed from a SyncRequest (None leaves it out);
        `at_once`: the same without waiting, or LATER (see sync_extensions.py)."""
        if key in CORE_KEYS or any(s.key == key for s in self._sections):
            raise ValueError(f"sync section {key} is taken")
        self._sections.append(Section(key, build, is_news, at_once))

    def add_room_field(self, key: str, build: RoomFieldBuild,
                       at_once: RoomFieldAtOnce | None = None) -> None:
        """A key of each joined room in the body, computed for all of them at once;
        `at_once`: the same without waiting, or None (see sync_extensions.py)."""
        if key in CORE_ROOM_KEYS or any(f.key == key for f in self._room_fields):
            raise ValueError(f"sync room field {key} is taken")
        self._room_fields.append(RoomField(key, build, at_once))

    def add_ready(self, hook: Callable[[int], Awaitable[Any]]) -> None:
        """Something a build up to events position N waits for (push's unread counts wait
        for evaluation to pass N): `prepare` waits for it once for all woken readers."""
        self._ready.append(hook)

    def add_default_account_data(self, data_type: str,
                                 build: Callable[[str], Awaitable[JsonDict]]) -> None:
        """Global account data of `data_type` that an initial sync carries even when the
        user has none stored (`m.push_rules`: the server-default rules); `build(user)` makes
        its content. Once stored, the stored one is served like any other."""
        self._default_account_data[data_type] = build

    # -- building --------------------------------------------------------------------

    def now(self) -> SyncToken:
        """The persisted-up-to position of every stream, read at one instant.

        Asked several times per long poll and per socket round: while no stream
        moves, the same token (and its written form, `text`) is handed out again.
        With the notifier given, the positions are not even read again until it
        has announced something: every stream position moves only together with
        an announcement (storage/streams.py, shared_streams.py, typing), so a
        token kept meanwhile is the current one."""
        notifier = self._notifier
        if notifier is not None:
            if notifier.version == self._last_version:
                return self._last[1]
            self._last_version = notifier.version
        positions = tuple([current() for current in self._currents])
        if positions != self._last[0]:
            token = StreamToken(*positions)
            self._last = (positions, token, str(token))
        return self._last[1]

    async def prepare(self, position: int) -> None:
        """Wait, once, for what every build up to events position `position` would wait
        for: the shared window's read of the new events and the extensions' hooks. The
        readers a change wakes are held until then (sync.ChangeWaiter), so each builds
        without waiting, instead of each waiting for the same things in turn."""
        await self._recent.catch_up(position)
        for hook in self._ready:
            await hook(position)

    def text(self, token: SyncToken) -> str:
        """`str(token)`, without writing it out again for the current token."""
        return self._last[2] if token is self._last[1] else str(token)

    async def build(self, user_id: str, since: SyncToken | None, filt: SyncFilter,
                    full_state: bool = False,
                    device_id: str | None = None) -> tuple[JsonDict, SyncToken]:
        now = self.now()
        if not self._sections and since == now and not full_state:
            return _empty_body(now), now  # nothing anywhere has moved: no query needed
        memberships = self._user_rooms.held_at(user_id, now.events) \
            or await self._user_rooms.rooms_at(user_id, now.events)
        if since is not None and not full_state and self._quiet(user_id, since, now):
            filt = self.ignoring(filt, self._ignored[user_id])
            request = SyncRequest(user_id, device_id, since, now, filt, full_state)
            rooms = await self._news_rooms(request, memberships)
            account_events: list[JsonDict] = []
        else:
            account = await self._ephemeral.account_changes(user_id, since, now)
            if since is None and self._default_account_data:
                stored = {t for room, t, _ in account if room == ""}
                for data_type, default in self._default_account_data.items():
                    if data_type not in stored:
                        account.append(("", data_type, await default(user_id)))
            ignored = await self._ignored_users(user_id, account)
            filt = self.ignoring(filt, ignored)
            request = SyncRequest(user_id, device_id, since, now, filt, full_state)
            rooms = await self._rooms(request, memberships, account, ignored)
            account_events = filt.account_data.cut([
                {"type": t, "content": c} for room, t, c in account
                if room == "" and filt.account_data.wants_type(t)])
        body: JsonDict = {"next_batch": self.text(now), "rooms": rooms,
                          "account_data": {"events": account_events}}
        body["presence"] = {"events": await self._ephemeral.presence_events(
            user_id, memberships, since, filt)}
        for section in self._sections:
            value = await section.build(request)
            if value is not None:
                body[section.key] = value
        return body, now

    def build_at_once(self, user_id: str, since: SyncToken, filt: SyncFilter,
                      device_id: str | None = None) -> tuple[RawJson, SyncToken] | None:
        """`build(user_id, since, filt, device_id=device_id)`'s answer when it has news and
        is made of what memory holds alone, else None (then `build` it): a quiet sync
        (`_quiet`) whose range's events are grouped (sync_news.py), whose rooms' shared
        parts are kept or made at once and served as they are (`_serve_directly`), and
        whose room fields, presence and sections are known without waiting (their
        `at_once`). Woken receivers are answered so, without a coroutine, what they share
        looked up once (sync_at_once.py): the same body, byte for byte, already encoded
        (tests/client_api/test_sync_at_once.py)."""
        return self._at_once.answer(user_id, since, filt, device_id)

    def ignoring(self, filt: SyncFilter, ignored: frozenset[str]) -> SyncFilter:
        """`filt.ignoring(ignored)`, the same object for every sync of the same filter and
        ignored users (sync_at_once.ignoring)."""
        return ignoring(self._ignoring, filt, ignored) if ignored else filt

    def is_empty(self, body: JsonDict) -> bool:
        """Nothing worth answering a long poll with (extension sections decide for theirs)."""
        rooms = body["rooms"]
        if rooms["join"]:  # (a woken receiver's usual answer: no generator to run)
            return False
        return (not any(rooms.get(k) for k in ("join", "invite", "leave", "knock"))
                and not body["account_data"]["events"] and not body["presence"]["events"]
                and not any(s.key in body and s.is_news(body[s.key]) for s in self._sections))

    # -- rooms -------------------------------------------------------------------

    def _quiet(self, user_id: str, since: SyncToken, now: SyncToken) -> bool:
        """Whether only room events can be new for the user in (since, now]: no typing,
        receipt or account data position moved, none of the user's memberships changed
        and their ignored users are known. Then `_news_rooms` answers what `_rooms`
        would, from the new events alone (under fan-out, the case of every receiver)."""
        return (since.events <= now.events and since.typing >= now.typing
                and since.receipts >= now.receipts and since.account_data >= now.account_data
                and user_id in self._ignored
                and not self._user_rooms.changed_since(user_id, since.events))

    async def _news_rooms(self, request: SyncRequest, memberships: dict[str, str]) -> JsonDict:
        """`rooms` of a quiet incremental sync (see `_quiet`): the user's joined rooms that
        have new events, each with the part it shares with every receiver of the same
        range and filter. No ephemeral, account data, invite or leave can be new, so the
        user's other rooms are not looked at: the cost is that of the news, not of the
        number of rooms the user is in."""
        since, now, filt = request.since, request.now, request.filter
        assert since is not None
        plans: dict[str, RoomPlan] = {}
        out: JsonDict = {"join": {}, "invite": {}, "leave": {}}
        if since.events < now.events:
            by_room = await self._window.by_room(since.events, now.events, memberships, filt)
            now_ms = self._view.now_ms()
            parts: list[tuple[str, SharedRoom]] = []
            for room_id, raw in by_room.items():
                shared = self._shared.get(room_id, since.events, now.events, filt, now_ms) \
                    or await self._new_shared_part(room_id, raw, since, now, filt, now_ms)
                if shared is not EMPTY:
                    parts.append((room_id, shared))
            if parts and self._serve_directly(parts, request.user_id):
                # Every room as every receiver gets it: no summary, no transaction id.
                joined = out["join"]
                for room_id, shared in parts:
                    joined[room_id] = shared.room()
                await self._add_room_fields(joined, request)
                return out
            plans = {room_id: shared.plan() for room_id, shared in parts}
        if plans:
            summaries = {r: p for r, p in plans.items()
                         if p.shared is None or p.shared.touches_summary}
            if summaries:
                await self._state.add_summaries(summaries, request.user_id, False)
            await self._serializer.serialize(out, plans, request.user_id, request.device_id,
                                             filt)
            await self._add_room_fields(out["join"], request)
        return out

    @staticmethod
    def _serve_directly(parts: list[tuple[str, SharedRoom]], user_id: str) -> bool:
        """Whether every shared part goes into the body as it is: served once for everyone,
        nothing in it the user sent (a transaction id could be theirs), and no event that
        may change the room summary (which is per user)."""
        for _, shared in parts:
            if shared.served is None or shared.touches_summary or user_id in shared.senders:
                return False
        return True

    async def _ignored_users(self, user_id: str,
                             account: list[tuple[str, str, JsonDict]]) -> frozenset[str]:
        """The users in the user's m.ignored_user_list: from this sync's account data
        changes when it changed, else remembered, else read once."""
        changed = [c for room, t, c in account if room == "" and t == IGNORED_USERS]
        if changed:
            content: JsonDict | None = changed[-1]
        elif user_id in self._ignored:
            return self._ignored[user_id]
        else:
            content = await self._account_data.get(user_id, "", IGNORED_USERS)
        users = content.get("ignored_users") if isinstance(content, dict) else None
        ignored = frozenset(u for u in users if u != user_id) if isinstance(users, dict) \
            else frozenset()
        if len(self._ignored) >= MAX_REMEMBERED_USERS:
            self._ignored.clear()
        self._ignored[user_id] = ignored
        return ignored

    async def _rooms(self, request: SyncRequest, memberships: dict[str, str],
                     account: list[tuple[str, str, JsonDict]],
                     ignored: frozenset[str] = frozenset()) -> JsonDict:
        user_id, since, now = request.user_id, request.since, request.now
        filt, full_state = request.filter, request.full_state
        joined = [r for r, m in memberships.items() if m == "join" and filt.wants_room(r)]
        invited = [r for r, m in memberships.items() if m == "invite" and filt.wants_room(r)]
        knocked = [r for r, m in memberships.items() if m == "knock" and filt.wants_room(r)]
        plans: dict[str, RoomPlan] = {}
        invites: list[str] = invited
        knocks: list[str] = knocked
        if since is None:
            await self._initial_joined(plans, user_id, joined, now, filt)
            if filt.include_leave:
                await self._initial_leaves(plans, user_id, memberships, now, filt)
        else:
            changes = []
            if self._user_rooms.changed_since(user_id, since.events):
                changes = await self._events.membership_changes(user_id, since.events, now.events)
            newly_joined = set(joined) if full_state else {r for r, m, _, _ in changes
                                                           if m == "join"}
            await self._incremental_joined(plans, user_id, joined, newly_joined, since, now, filt)
            invites = [r for r, m, _, _ in changes if m == "invite" and r in invited]
            knocks = [r for r, m, _, _ in changes if m == "knock" and r in knocked]
            # A leave is served under `leave` even if an invite or knock followed it in the
            # range (the events up to it were the user's: Synapse serves both sections too);
            # a leave followed by a rejoin is in the joined room's timeline instead.
            left = {r: pos for r, m, _, pos in changes if m in ("leave", "ban")
                    and memberships.get(r) in _NOT_JOINED and filt.wants_room(r)}
            await self._leaves(plans, user_id, left, since, filt)
        await self._ephemeral.add(plans, joined, user_id, since, now, account, filt)
        await self._state.add_summaries(plans, user_id, since is None or full_state)
        out: JsonDict = {"join": {}, "invite": {}, "leave": {}}
        await self._serializer.serialize(out, plans, user_id, request.device_id, filt)
        await self._add_room_fields(out["join"], request)
        if ignored:
            invites = [r for r in invites if await self._state.inviter(r, user_id) not in ignored]
        stripped = self._state.stripped_state
        for room_id in dict.fromkeys(invites):
            out["invite"][room_id] = {"invite_state": {"events": await stripped(room_id,
                                                                                user_id)}}
        if knocks:
            out["knock"] = {room_id: {"knock_state": {"events": await stripped(room_id, user_id)}}
                            for room_id in dict.fromkeys(knocks)}
        return out

    async def _add_room_fields(self, joined: JsonDict, request: SyncRequest) -> None:
        if not joined:
            return
        rooms = list(joined)
        for room_field in self._room_fields:
            values = await room_field.build(request, rooms)
            for room_id, value in values.items():
                if room_id in joined:
                    joined[room_id][room_field.key] = value

    async def _initial_joined(self, plans: dict[str, RoomPlan], user_id: str,
                              joined: list[str], now: SyncToken, filt: SyncFilter) -> None:
        latest = await self._queries.latest_per_room(joined, now.events, filt.timeline_limit)
        joins = await self._events.latest_join_positions(user_id, joined)
        for room_id in joined:
            events = await self._visible(user_id, room_id, self._wanted(latest.get(room_id, []),
                                                                        filt), joins.get(room_id))
            plans[room_id] = self._plan(events, filt, now)
        await self._state.add_full_state(plans, joined, user_id, filt, now)

    async def _incremental_joined(
        self, plans: dict[str, RoomPlan], user_id: str, joined: list[str],
        newly_joined: set[str], since: SyncToken, now: SyncToken, filt: SyncFilter,
    ) -> None:
        fresh: list[StoredEvent] = []
        if since.events < now.events:
            fresh = await self._recent.in_range(joined, since.events, now.events,
                                                MAX_INCREMENTAL_EVENTS)
        by_room: dict[str, list[StoredEvent]] = {}
        for stored in fresh:
            by_room.setdefault(stored.room_id, []).append(stored)
        joins = await self._events.latest_join_positions(user_id, list(newly_joined)) \
            if newly_joined else {}
        for room_id in joined:
            raw = by_room.get(room_id, [])
            if room_id not in newly_joined:
                if raw:
                    shared = await self._shared_part(room_id, raw, since, now, filt)
                    if shared is not EMPTY:
                        plans[room_id] = shared.plan()
                continue
            new = await self._visible(user_id, room_id, self._wanted(raw, filt),
                                      joins.get(room_id))
            plan = self._plan(new, filt, now)
            plan.limited = plan.limited or bool(new)
            plans[room_id] = plan
        await self._state.add_full_state(plans, sorted(newly_joined & set(plans)), user_id,
                                         filt, now)

    async def _shared_part(self, room_id: str, raw: list[StoredEvent], since: SyncToken,
                           now: SyncToken, filt: SyncFilter) -> SharedRoom:
        """The room's part of an incremental sync for a member joined before `since`:
        what every receiver with the same range and filter gets (sync_shared.py)."""
        now_ms = self._view.now_ms()
        found = self._shared.get(room_id, since.events, now.events, filt, now_ms)
        if found is not None:
            return found
        return await self._new_shared_part(room_id, raw, since, now, filt, now_ms)

    async def _new_shared_part(self, room_id: str, raw: list[StoredEvent], since: SyncToken,
                               now: SyncToken, filt: SyncFilter, now_ms: int) -> SharedRoom:
        """Plan and serve the room's shared part (none was kept), and keep it."""
        plan = self._shared_plan(room_id, raw, now, filt)
        if plan is None:
            entry = EMPTY
        else:
            if filt.lazy_load_members:
                await self._state.add_lazy_members(room_id, plan, filt)
            entry = await self._serve_shared(plan, filt)
        self._shared.put(room_id, since.events, now.events, filt, now_ms, entry)
        return entry

    def _shared_part_at_once(self, room_id: str, raw: list[StoredEvent], since: SyncToken,
                             now: SyncToken, filt: SyncFilter,
                             now_ms: int) -> SharedRoom | None:
        """`_new_shared_part`'s part when it needs no await (no lazy loading, no redaction
        to read), kept; else None. A woken receiver's first answer is then made at once."""
        if filt.lazy_load_members:
            return None
        plan = self._shared_plan(room_id, raw, now, filt)
        if plan is None:
            entry = EMPTY
        else:
            kinds = self._relation_kinds(plan)
            served: list[JsonDict] | None = None
            if kinds is not None:
                served = self._view.serialize_at_once(plan.timeline, kinds)
                state = self._view.serialize_at_once(plan.state) if served is not None \
                    else None
                if served is None or state is None:
                    return None
                served += state
            entry = self._shared_room(plan, filt, served)
        self._shared.put(room_id, since.events, now.events, filt, now_ms, entry)
        return entry

    def _shared_plan(self, room_id: str, raw: list[StoredEvent], now: SyncToken,
                     filt: SyncFilter) -> RoomPlan | None:
        """The plan every receiver of the range shares (its timeline, and the state changes
        hidden before it), or None when the filter leaves nothing of the range."""
        new = self._wanted(raw, filt)
        gap = self._state.state_before_timeline(raw, new, filt)
        if not new and not gap:
            return None
        plan = self._plan(new, filt, now)
        if gap:
            plan.state = self._state.state_in_gap(room_id, gap, plan, filt)
        return plan

    async def _serve_shared(self, plan: RoomPlan, filt: SyncFilter) -> SharedRoom:
        """The plan, with its events served when nothing of them is per receiver: no
        relation points at any timeline event (the window knows; a thread summary says
        whether the reader took part)."""
        kinds = self._relation_kinds(plan)
        served: list[JsonDict] | None = None
        if kinds is not None:
            # No relations to aggregate: the user id serves no one in particular.
            served = await self._view.serialize(plan.timeline, "", relation_kinds=kinds)
            if plan.state:
                served += await self._view.serialize(plan.state, "", with_relations=False)
        return self._shared_room(plan, filt, served)

    def _relation_kinds(self, plan: RoomPlan) -> dict[str, frozenset[str]] | None:
        """The timeline's relation kinds when none points at any of its events (then its
        events are served once for everyone), else None."""
        kinds = self._recent.relation_kinds(e.event.event_id for e in plan.timeline)
        return kinds if kinds is not None and not any(kinds.values()) else None

    @staticmethod
    def _shared_room(plan: RoomPlan, filt: SyncFilter,
                     served: list[JsonDict] | None) -> SharedRoom:
        """The SharedRoom of a plan and its served events (timeline, then state; None:
        served per receiver), shaped by the filter's event_fields and event_format."""
        shaped = served
        if served is not None and (filt.event_fields is not None
                                   or filt.event_format != "client"):
            shaped = [filt.shape(b, e.event) for b, e in zip(served, plan.timeline + plan.state,
                                                               strict=True)]
        return SharedRoom(plan.timeline, plan.limited, plan.prev_batch, plan.state, served,
                          shaped, frozenset(e.event.sender for e in plan.timeline),
                          any(e.event.type in SUMMARY_TYPES for e in (*plan.timeline,
                                                                       *plan.state)))

    async def _initial_leaves(self, plans: dict[str, RoomPlan], user_id: str,
                              memberships: dict[str, str], now: SyncToken,
                              filt: SyncFilter) -> None:
        """include_leave: rooms the user left, with the timeline up to their leaving."""
        left = [r for r, m in memberships.items() if m in ("leave", "ban") and filt.wants_room(r)]
        if not left:
            return
        ended: dict[str, int] = {}
        for room_id, _, _, position in await self._events.membership_changes(
                user_id, FIRST_POSITION, now.events):
            ended[room_id] = position
        for room_id in left:
            # A forgotten room is gone from the user's view (spec: /forget): not listed.
            if room_id not in ended or await self._view.access.is_forgotten(room_id, user_id):
                continue
            latest = await self._queries.latest_per_room([room_id], ended[room_id],
                                                         filt.timeline_limit)
            events = await self._view.visible(room_id, user_id,
                                              self._wanted(latest.get(room_id, []), filt))
            plan = self._plan(events, filt, StreamToken(events=ended[room_id]))
            plan.left = True
            plans[room_id] = plan

    def _plan(self, events: list[LoadedEvent], filt: SyncFilter, now: SyncToken) -> RoomPlan:
        timeline = events[-filt.timeline_limit:] if filt.timeline_limit else []
        first = timeline[0].stream_ordering if timeline else now.events + 1
        return RoomPlan(timeline, len(events) > len(timeline), f"s{(first or 1) - 1}")

    async def _leaves(self, plans: dict[str, RoomPlan], user_id: str, left: dict[str, int],
                      since: SyncToken, filt: SyncFilter) -> None:
        """Each room left in the range, its timeline up to the (last) leave, as visible to
        the user: one who was only invited (a rejected invite) sees no more than history
        visibility lets them, as on every read path."""
        if not left:
            return
        fresh = await self._recent.in_range(list(left), since.events, max(left.values()),
                                            MAX_INCREMENTAL_EVENTS)
        joins = await self._events.latest_join_positions(user_id, list(left))
        for room_id, position in left.items():
            mine = await self._visible(user_id, room_id, self._wanted(
                [s for s in fresh if s.room_id == room_id and (s.stream_ordering or 0) <= position],
                filt), joins.get(room_id))
            plan = self._plan(mine, filt, StreamToken(events=position))
            plan.left = True
            plans[room_id] = plan

    async def _visible(self, user_id: str, room_id: str, events: list[LoadedEvent],
                       joined_at: int | None) -> list[LoadedEvent]:
        """History visibility; skipped when the user joined before the first event (the
        common case), since a joined member sees everything after their join."""
        if not events or (joined_at is not None and joined_at <= (events[0].stream_ordering or 0)):
            return events
        return await self._view.visible(room_id, user_id, events)

    def _wanted(self, stored: list[StoredEvent], filt: SyncFilter) -> list[LoadedEvent]:
        timeline = filt.timeline
        loaded = self._engine.loaded(stored)
        if timeline.passes_every_event() and timeline.rooms is None and not timeline.not_rooms:
            return loaded
        return [e for e in loaded if timeline.wants_room(e.event.room_id)
                and timeline.wants(e.event.type, e.event.sender, e.event.content)]


_NOT_JOINED = ("leave", "ban", "invite", "knock")


def _in_token_order(positions: dict[str, Callable[[], int]]) -> list[Callable[[], int]]:
    """Each StreamToken field's position function, in field order (0 if unregistered)."""
    return [positions.get(name, _zero) for name in STREAMS]


def _zero() -> int:
    return 0


def _empty_body(now: SyncToken) -> JsonDict:
    return {"next_batch": str(now), "rooms": {"join": {}, "invite": {}, "leave": {}},
            "account_data": {"events": []}, "presence": {"events": []}}
