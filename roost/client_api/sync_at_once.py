"""A woken receiver's /sync answer from memory, what receivers share looked up once per wake-up.

One message wakes every member's long poll, and each receiver's answer
(`SyncBuilder.build_at_once`) is the same rooms, with the same served events,
around its own unread counts, presence and e2ee sections. Every receiver used
to find the range's news rooms, look up their shared parts (sync_shared.py),
check each for a summary event, and have its served events encoded again;
and the first receiver of each message took the general `build` to make the
shared part. `WakeAnswers` keeps, for the newest (since, now, filter) asked,
what every receiver of that wake-up shares: the range's rooms the filter
wants, in the order `build` lists them, each with its shared part (made here
when no await is needed: SyncBuilder._shared_part_at_once) and that part's
`timeline` and `state` encoded as JSON once (orjson fragments, written into
each answer as they are). A receiver then only checks what is its own: which
of those rooms it is joined to, whether it sent an event of them (a
transaction id), and the extensions' values; its answer is returned encoded.

An ignore list only takes the ignored senders' events out of timelines, so a
user none of whose ignored users sent anything in the range gets the answer
of the filter they asked with (the wake-up's `senders`), and shares it; else
their filter with the ignored senders (one object per filter and ignore list,
SyncBuilder.ignoring) gets its own parts.

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

from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from roost.client_api.stream_token import StreamToken
from roost.client_api.sync_extensions import LATER, SyncRequest
from roost.client_api.sync_filter import SyncFilter
from roost.client_api.sync_shared import EMPTY, SHARE_MS, SharedRoom
from roost.http.bodies import RawJson

if TYPE_CHECKING:
    from roost.client_api.sync_builder import SyncBuilder

JsonDict = dict[str, Any]
MAX_WAKES = 16  # (filter, since) kept per `now` (receivers of one change mostly share one)
_EMPTY_EVENTS = orjson.Fragment(b'{"events":[]}')


class _Room(NamedTuple):
    """One news room of the range as every receiver of the wake-up gets it. (Named
    tuples: a dataclass's generated methods are memory bench/memory.py counts.)"""

    room_id: str
    # None: `build` answers its members (a summary event or a relation in it makes it per
    # receiver; or, when `missing`, its part was neither kept nor made at once)
    shared: SharedRoom | None
    timeline: orjson.Fragment | None  # its `timeline` and `state` objects, encoded once
    state: orjson.Fragment | None
    missing: bool = False


class _Wake(NamedTuple):
    since: StreamToken
    now: StreamToken
    filt: SyncFilter
    rooms: tuple[_Room, ...]  # in the order the range's events first name them
    kept_ms: int  # when the oldest of the shared parts was kept (SharedRooms)
    senders: frozenset[str]  # of every event of the range in those rooms, filtered or not


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
        if ignored and not ignored.isdisjoint(wake.senders):
            # Only then does the ignore list change the rooms' parts (it only takes
            # senders' events out of timelines): else the answer is the filter's own.
            filt = b.ignoring(filt, ignored)
            wake = self._wake_for(since, now, filt)
            if wake is None:
                return None
        now_ms = b._view.now_ms()
        if now_ms - wake.kept_ms > SHARE_MS or now_ms < wake.kept_ms:
            return None  # (the served ages would be older than SharedRooms serves)
        joined: JsonDict = {}
        for room in wake.rooms:
            if memberships.get(room.room_id) != "join":
                continue
            shared = room.shared
            if shared is None or user_id in shared.senders:
                if room.missing:  # `build` keeps it: the next receiver looks again
                    self._wakes.pop((id(filt), since.events), None)
                return None
            joined[room.room_id] = {"timeline": room.timeline, "state": room.state,
                                    "account_data": _EMPTY_EVENTS, "ephemeral": _EMPTY_EVENTS}
        if not joined:
            return None
        request = SyncRequest(user_id, device_id, since, now, filt, False)
        rooms = list(joined)
        for room_field in b._room_fields:
            values = room_field.at_once(request, rooms) if room_field.at_once else None
            if values is None:
                return None
            key = room_field.key
            for room_id, value in values.items():
                if room_id in joined:
                    joined[room_id][key] = value
        presence = b._ephemeral.presence_at_once(user_id, since, filt)
        if presence is None:
            return None
        body: JsonDict = {"next_batch": b.text(now),
                          "rooms": {"join": joined, "invite": {}, "leave": {}},
                          "account_data": {"events": []}, "presence": {"events": presence}}
        for section in b._sections:
            value = section.at_once(request) if section.at_once else LATER
            if value is LATER:
                return None
            if value is not None:
                body[section.key] = value
        try:
            return RawJson(orjson.dumps(body)), now
        except orjson.JSONEncodeError:
            return None  # (`build` answers; the encoder copes with what orjson refuses)

    def _wake_for(self, since: StreamToken, now: StreamToken,
                  filt: SyncFilter) -> _Wake | None:
        wake = self._wakes.get((id(filt), since.events))
        if wake is not None and wake.now is now and wake.filt is filt and (
                wake.since is since or wake.since == since):
            return wake
        return self._wake(since, now, filt)

    def _wake(self, since: StreamToken, now: StreamToken, filt: SyncFilter) -> _Wake | None:
        """What every receiver of (since, now] with this filter shares, kept; None when the
        range is not grouped in memory."""
        b = self._builder
        if not (since.typing >= now.typing and since.receipts >= now.receipts
                and since.account_data >= now.account_data):
            return None  # (`_quiet`: not only room events can be new)
        grouped = b._window.grouped(since.events, now.events)
        if grouped is None:
            return None
        now_ms = b._view.now_ms()
        kept_ms = now_ms
        rooms: list[_Room] = []
        senders: set[str] = set()
        for room_id, raw in grouped.items():
            if not filt.wants_room(room_id):
                continue
            senders.update(e.event.sender for e in b._engine.loaded(raw))
            found = b._shared.entry(room_id, since.events, now.events, filt, now_ms)
            if found is None:
                made = b._shared_part_at_once(room_id, raw, since, now, filt, now_ms)
                if made is None:
                    rooms.append(_Room(room_id, None, None, None, missing=True))
                    continue
                found = (now_ms, made)
            kept_ms = min(kept_ms, found[0])
            shared = found[1]
            if shared is EMPTY:
                continue
            if shared.served is None or shared.touches_summary:
                rooms.append(_Room(room_id, None, None, None))
                continue
            encoded = _encoded(shared)
            if encoded is None:
                rooms.append(_Room(room_id, None, None, None))
                continue
            rooms.append(_Room(room_id, shared, *encoded))
        self.made += 1
        wake = _Wake(since, now, filt, tuple(rooms), kept_ms, frozenset(senders))
        wakes = self._wakes
        if any(w.now is not now for w in wakes.values()) or len(wakes) >= MAX_WAKES:
            wakes.clear()  # (an older wake-up's: done)
        wakes[(id(filt), since.events)] = wake
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

