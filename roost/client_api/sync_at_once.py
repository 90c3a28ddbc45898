"""A woken receiver's /sync answer from memory, what receivers share looked up once per wake-up.

One message wakes every member's long poll, and each receiver's answer
(`SyncBuilder.build_at_once`) is the same rooms, with the same served events,
around its own unread counts, presence and e2ee sections. Every receiver used
to find the range's news rooms, look up their shared parts (sync_shared.py),
check each for a summary event, and have its served events encoded again;
and the first receiver of each message took the general `build` to make the
shared part. `WakeAnswers` keeps, for the newest `now` and each (since,
filter) asked, what every receiver of that wake-up shares: the range's rooms
the filter wants, in the order `build` lists them, each, once a receiver
joined to it asks, with its shared part (made here when no await is needed:
SyncBuilder._shared_part_at_once) and that part's `timeline` and `state`
encoded as JSON once (orjson fragments, written into each answer as they
are). A receiver then only checks what is its own: which of those rooms it
is joined to, whether it sent an event of them (a transaction id), and the
extensions' values; its answer is returned encoded.

An ignore list only takes the ignored senders' events out of timelines, so a
user none of whose ignored users sent anything in the range in their rooms
gets the answer of the filter they asked with (each room's `senders`), and
shares it; else their filter with the ignored senders (one object per filter
and ignore list, SyncBuilder.ignoring) gets its own parts.

Exact: what is kept is decided by (since, now, filter) and by the shared parts,
which are themselves keyed by exactly that (sync_shared.py); a change landing
between two receivers' answers moves `now` (SyncBuilder.now), and the next
receiver looks up a wake-up of its own. Everything per user (memberships,
ignored users, unread counts, presence, e2ee) is asked per receiver as before.
The served events carry ages; a kept part is used for at most SHARE_MS, as
`SharedRooms.get` uses it. The body is the bytes `build`'s body encodes to
(tests/client_api/test_sync_at_once.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from roost.client_api.stream_token import StreamToken
from roost.client_api.sync_extensions import LATER, SyncRequest
from roost.client_api.sync_filter import SyncFilter
from roost.client_api.sync_shared import EMPTY, SHARE_MS, SharedRoom
from roost.http.bodies import RawJson
from roost.storage.events import StoredEvent

if TYPE_CHECKING:
    from roost.client_api.sync_builder import SyncBuilder

JsonDict = dict[str, Any]
MAX_WAKES = 16  # (filter, since) kept per `now` (receivers of one change mostly share one)
_EMPTY_EVENTS = orjson.Fragment(b'{"events":[]}')


class _Room:
    """One news room of the range as every receiver of the wake-up gets it."""

    __slots__ = ("shared", "timeline", "state", "kept_ms", "senders")

    def __init__(self, shared: SharedRoom | None, encoded: tuple[Any, Any] | None,
                 kept_ms: int, senders: frozenset[str]) -> None:
        # None: `build` answers its members (a summary event or a relation in it makes the
        # part per receiver; or orjson refused it); EMPTY: the filter keeps nothing of it
        self.shared = shared
        # its `timeline` and `state` objects, encoded once (orjson fragments)
        self.timeline, self.state = encoded or (None, None)
        self.kept_ms = kept_ms  # when its shared part was kept: the served events' ages
        self.senders = senders  # of every event of the range in it, filtered out or not


class _Wake:
    """What the receivers of one wake-up with one filter share: the range's rooms the
    filter wants, in the order `build` lists them, each looked up when a receiver
    joined to it first asks (a long range holds rooms no receiver of it is in)."""

    __slots__ = ("since", "now", "filt", "order", "raw", "rooms", "last")

    def __init__(self, since: StreamToken, now: StreamToken, filt: SyncFilter,
                 raw: dict[str, list[StoredEvent]]) -> None:
        self.since = since
        self.now = now
        self.filt = filt
        self.order = [room_id for room_id in raw if filt.wants_room(room_id)]
        self.raw = raw
        self.rooms: dict[str, _Room] = {}
        # The last answer made, with what made it: (rooms, room fields' values, presence,
        # sections' values, the answer). The next receiver whose own values are equal gets
        # it as it is (extensions' `at_once` values are never modified once returned).
        self.last: tuple[list[str], list[dict[str, Any]], list[JsonDict], list[Any],
                         RawJson] | None = None


class WakeAnswers:
    """`SyncBuilder.build_at_once`'s work, the shared part of it done once per wake-up."""

    def __init__(self, builder: SyncBuilder) -> None:
        self._builder = builder
        # (id(filter), since's events position) -> the wake-up's, for the newest `now`
        self._wakes: dict[tuple[int, int], _Wake] = {}
        self.made = 0  # wake-ups looked up (tests and benchmarks)

    def answer(self, user_id: str, since: StreamToken, filt: SyncFilter,
               device_id: str | None) -> tuple[RawJson, StreamToken] | None:
        """See SyncBuilder.build_at_once: the body encoded (the shared parts written in as
        they were encoded once), or None."""
        b = self._builder
        now = b.now()
        if since.events >= now.events:
            return None
        memberships = b._user_rooms.held_at(user_id, now.events)
        if memberships is None:
            return None
        ignored = b._ignored.get(user_id)
        if ignored is None or b._user_rooms.changed_since(user_id, since.events):
            return None  # (`_quiet`'s per-user half; the positions are the wake-up's)
        wake = self._wake_for(since, now, filt)
        if wake is None:
            return None
        now_ms = b._view.now_ms()
        mine = self._rooms(wake, memberships, now_ms)
        if mine is None:
            return None
        if ignored and any(not ignored.isdisjoint(room.senders) for _, room in mine):
            # Only then does the ignore list change the rooms' parts (it only takes
            # senders' events out of timelines): else the answer is the filter's own.
            filt = b.ignoring(filt, ignored)
            wake = self._wake_for(since, now, filt)
            mine = self._rooms(wake, memberships, now_ms) if wake is not None else None
            if mine is None:
                return None
        rooms: list[str] = []
        for room_id, room in mine:
            shared = room.shared
            if shared is EMPTY:
                continue
            if shared is None or user_id in shared.senders:
                return None
            rooms.append(room_id)
        if not rooms:
            return None
        request = SyncRequest(user_id, device_id, since, now, filt, False)
        fields: list[dict[str, Any]] = []
        for room_field in b._room_fields:
            values = room_field.at_once(request, rooms) if room_field.at_once else None
            if values is None:
                return None
            fields.append(values)
        presence = b._ephemeral.presence_at_once(user_id, since, filt)
        if presence is None:
            return None
        sections: list[Any] = []
        for section in b._sections:
            value = section.at_once(request) if section.at_once else LATER
            if value is LATER:
                return None
            sections.append(value)
        last = wake.last
        if last is not None and last[0] == rooms and last[1] == fields \
                and last[2] == presence and last[3] == sections:
            return last[4], now  # the previous receiver's answer, byte for byte
        body = self._body(wake, rooms, fields, presence, sections)
        if body is None:
            return None
        wake.last = (rooms, fields, presence, sections, body)
        return body, now

    def _body(self, wake: _Wake, rooms: list[str], fields: list[dict[str, Any]],
              presence: list[JsonDict], sections: list[Any]) -> RawJson | None:
        """The answer of a receiver of the wake-up joined to `rooms`, with its room fields'
        values, presence and sections' values, encoded; None if orjson refuses it (then
        `build` answers, and the encoder copes)."""
        b = self._builder
        joined: JsonDict = {}
        for room_id in rooms:
            room = wake.rooms[room_id]
            joined[room_id] = {"timeline": room.timeline, "state": room.state,
                               "account_data": _EMPTY_EVENTS, "ephemeral": _EMPTY_EVENTS}
        for room_field, values in zip(b._room_fields, fields, strict=True):
            key = room_field.key
            for room_id, value in values.items():
                if room_id in joined:
                    joined[room_id][key] = value
        body: JsonDict = {"next_batch": b.text(wake.now),
                          "rooms": {"join": joined, "invite": {}, "leave": {}},
                          "account_data": {"events": []}, "presence": {"events": presence}}
        for section, value in zip(b._sections, sections, strict=True):
            if value is not None:
                body[section.key] = value
        try:
            return RawJson(orjson.dumps(body))
        except orjson.JSONEncodeError:
            return None

    def _rooms(self, wake: _Wake, memberships: dict[str, str],
               now_ms: int) -> list[tuple[str, _Room]] | None:
        """The wake-up's rooms the user is joined to, each looked up or made once; None
        when one is not in memory (`build` answers, and keeps it for the next receiver)
        or was kept longer ago than SharedRooms serves it."""
        mine: list[tuple[str, _Room]] = []
        rooms = wake.rooms
        for room_id in wake.order:
            if memberships.get(room_id) != "join":
                continue
            room = rooms.get(room_id)
            if room is None:
                room = self._room(wake, room_id, now_ms)
                if room is None:
                    return None
                rooms[room_id] = room
            elif now_ms - room.kept_ms > SHARE_MS or now_ms < room.kept_ms:
                del rooms[room_id]  # (the served ages would be older than SharedRooms serves)
                wake.last = None
                return None
            mine.append((room_id, room))
        return mine

    def _room(self, wake: _Wake, room_id: str, now_ms: int) -> _Room | None:
        """The room's shared part, kept or made at once, encoded; None if neither."""
        b = self._builder
        since, now, filt = wake.since, wake.now, wake.filt
        raw = wake.raw[room_id]
        found = b._shared.entry(room_id, since.events, now.events, filt, now_ms)
        if found is None:
            made = b._shared_part_at_once(room_id, raw, since, now, filt, now_ms)
            if made is None:
                return None
            found = (now_ms, made)
        kept_ms, shared = found
        senders = frozenset(e.event.sender for e in b._engine.loaded(raw))
        if shared is EMPTY:
            return _Room(EMPTY, None, kept_ms, senders)
        encoded = _encoded(shared) if shared.served is not None \
            and not shared.touches_summary else None
        return _Room(shared if encoded is not None else None, encoded, kept_ms, senders)

    def _wake_for(self, since: StreamToken, now: StreamToken,
                  filt: SyncFilter) -> _Wake | None:
        """The wake-up of (since, now] for this filter: kept, or looked up and kept; None
        when not only room events can be new or the range is not grouped in memory."""
        key = (id(filt), since.events)
        wake = self._wakes.get(key)
        if wake is not None and wake.now is now and wake.filt is filt and (
                wake.since is since or wake.since == since):
            return wake
        if not (since.typing >= now.typing and since.receipts >= now.receipts
                and since.account_data >= now.account_data):
            return None  # (`_quiet`: not only room events can be new)
        grouped = self._builder._window.grouped(since.events, now.events)
        if grouped is None:
            return None
        self.made += 1
        wake = _Wake(since, now, filt, grouped)
        wakes = self._wakes
        if any(w.now is not now for w in wakes.values()) or len(wakes) >= MAX_WAKES:
            wakes.clear()  # (an older wake-up's: done)
        wakes[key] = wake
        return wake


def _encoded(shared: SharedRoom) -> tuple[orjson.Fragment, orjson.Fragment] | None:
    """The room's `timeline` and `state` objects as `SharedRoom.room` makes them, encoded;
    None for what orjson refuses (then `build` answers, and its encoder copes)."""
    n = len(shared.timeline)
    shaped = shared.shaped
    assert shaped is not None
    try:
        return (orjson.Fragment(orjson.dumps({"events": shaped[:n], "limited": shared.limited,
                                              "prev_batch": shared.prev_batch})),
                orjson.Fragment(orjson.dumps({"events": shaped[n:]})))
    except orjson.JSONEncodeError:
        return None


IgnoringCache = dict[tuple[int, frozenset[str]], tuple[SyncFilter, SyncFilter]]


def ignoring(cache: IgnoringCache, filt: SyncFilter, ignored: frozenset[str],
             limit: int = 1024) -> SyncFilter:
    """`filt.ignoring(ignored)`, one object for each (filter, ignored users) while kept: a
    user's every sync (and users ignoring the same people) then share the parts keyed by
    the filter object (sync_shared.py) instead of each sync making a filter of its own."""
    key = (id(filt), ignored)
    found = cache.get(key)
    if found is not None and found[0] is filt:
        return found[1]
    made = filt.ignoring(ignored)
    if len(cache) >= limit:
        cache.clear()
    cache[key] = (filt, made)
    return made

