"""GET /notifications, and the unread counts /sync carries per room.

Both read what push evaluation stored (`push_actions`) against the user's read
positions (receipts, public or private, threaded or not, and their own newest
event). The counts wait for evaluation to reach the events position of the
sync they go into, so a new event and the count it changes arrive together,
as the spec requires.
"""

from __future__ import annotations

from typing import Any

from roost.client_api.errors import invalid_param
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.room_view import RoomView
from roost.client_api.sync_extensions import SyncRequest
from roost.push.counts import CountsSource
from roost.push.evaluator import MAIN
from roost.storage.push import PushActionStore

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# How long a sync waits for evaluation to catch up before answering with what is stored.
CATCH_UP_TIMEOUT_S = 5.0


class UnreadCounts:
    """The two /sync room fields, computed together: the builder asks for
    `unread_notifications` and then `unread_thread_notifications` of the same request, and
    the second takes what the first left for it."""

    def __init__(self, store: PushActionStore, evaluator: CountsSource) -> None:
        """`evaluator`: this process's PushEvaluator, or what follows another process's
        (push/shared_counts.py)."""
        self._store = store
        self._evaluator = evaluator
        self._threads_for: dict[int, dict[str, JsonDict]] = {}

    async def ready(self, events_position: int) -> None:
        """What the counts of a sync up to `events_position` wait for (SyncBuilder.add_ready)."""
        await self._evaluator.reached(events_position, CATCH_UP_TIMEOUT_S)

    async def unread_notifications(self, request: SyncRequest, room_ids: list[str]
                                   ) -> dict[str, JsonDict]:
        per_thread = request.filter.unread_thread_notifications
        fields = await self.room_fields(request.user_id, room_ids, request.now.events,
                                        per_thread)
        if per_thread:
            self._keep_threads(request, fields)
        return {room: f["unread_notifications"] for room, f in fields.items()}

    async def unread_thread_notifications(self, request: SyncRequest, room_ids: list[str]
                                          ) -> dict[str, JsonDict]:
        """Only when the filter asks for counts per thread (else they are in the total)."""
        if not request.filter.unread_thread_notifications:
            return {}
        found = self._threads_for.pop(id(request), None)
        if found is not None:
            return found
        fields = await self.room_fields(request.user_id, room_ids, request.now.events, True)
        return {room: f["unread_thread_notifications"] for room, f in fields.items()
                if "unread_thread_notifications" in f}

    def unread_notifications_at_once(self, request: SyncRequest, room_ids: list[str]
                                     ) -> dict[str, JsonDict] | None:
        """`unread_notifications` when evaluation has passed the request's events position
        and every room's counts are held (no wait, no read), else None."""
        position = request.now.events
        if not self._evaluator.has_reached(position):
            return None
        counts = self._evaluator.counts.held(request.user_id, room_ids, position)
        if counts is None:
            return None
        if not request.filter.unread_thread_notifications:  # (_fields' usual case, inline)
            return {room_id: _total(counts.get(room_id)) for room_id in room_ids}
        fields = _fields(counts, room_ids, True)
        self._keep_threads(request, fields)
        return {room: f["unread_notifications"] for room, f in fields.items()}

    def unread_thread_notifications_at_once(self, request: SyncRequest, room_ids: list[str]
                                            ) -> dict[str, JsonDict] | None:
        """`unread_thread_notifications` of a request whose `unread_notifications` were
        made at once (they are kept for it then), else None."""
        if not request.filter.unread_thread_notifications:
            return {}
        return self._threads_for.pop(id(request), None)

    def _keep_threads(self, request: SyncRequest, fields: dict[str, JsonDict]) -> None:
        while len(self._threads_for) >= 64:  # a request whose second call never came
            self._threads_for.pop(next(iter(self._threads_for)))
        self._threads_for[id(request)] = {
            room: f["unread_thread_notifications"] for room, f in fields.items()
            if "unread_thread_notifications" in f}

    async def room_fields(self, user_id: str, room_ids: list[str], events_position: int,
                          per_thread: bool) -> dict[str, JsonDict]:
        """room -> `unread_notifications` (and, when the filter asks for it,
        `unread_thread_notifications`) for every room given."""
        if not room_ids:
            return {}
        ready = self._evaluator.reached(events_position, CATCH_UP_TIMEOUT_S)
        if not ready.called:  # (most often evaluation is past already: nothing to wait on)
            await ready
        counts = await self._evaluator.counts.read_through(user_id, room_ids, self._store,
                                                           events_position)
        return _fields(counts, room_ids, per_thread)


def _fields(counts: dict[str, Any], room_ids: list[str], per_thread: bool
            ) -> dict[str, JsonDict]:
    """The room fields of every room given from its counts per thread (none: nothing unread)."""
    out: dict[str, JsonDict] = {}
    for room_id in room_ids:
        threads = counts.get(room_id, {})
        if per_thread:
            main = threads.get(MAIN, (0, 0))
            fields: JsonDict = {"unread_notifications": _counts(*main)}
            others = {t: _counts(*c) for t, c in threads.items() if t != MAIN}
            if others:
                fields["unread_thread_notifications"] = others
        else:
            fields = {"unread_notifications": _total(threads)}
        out[room_id] = fields
    return out


def _total(threads: dict[str, Any] | None) -> JsonDict:
    """`unread_notifications` summed over the room's threads (None or {}: nothing unread)."""
    if not threads:
        return {"notification_count": 0, "highlight_count": 0}
    if len(threads) == 1:  # the common case: the main thread's
        notifications, highlights = next(iter(threads.values()))
        return {"notification_count": notifications, "highlight_count": highlights}
    return _counts(sum(c[0] for c in threads.values()), sum(c[1] for c in threads.values()))


def _counts(notifications: int, highlights: int) -> JsonDict:
    return {"notification_count": notifications, "highlight_count": highlights}


def register(router: Router, store: PushActionStore, view: RoomView) -> None:
    async def notifications(req: ApiRequest) -> JsonDict:
        user = req.user.user_id
        limit = req.int_arg("limit", DEFAULT_LIMIT)
        if limit is None or limit < 0:
            raise invalid_param("limit must not be negative")
        limit = min(limit, MAX_LIMIT)
        raw_from = req.arg("from")
        before = None
        if raw_from is not None:
            if not raw_from.lstrip("-").isdigit():
                raise invalid_param("from is not a token this server gave")
            before = int(raw_from)
        only = req.arg("only")
        found = await store.notifications(user, before, limit, only == "highlight")
        loaded = await view.engine.get_events([n.event_id for n in found])
        by_room: dict[str, list[Any]] = {}
        for n in found:
            if n.event_id in loaded:
                by_room.setdefault(n.room_id, []).append(loaded[n.event_id])
        visible: set[str] = set()
        for room_id, events in by_room.items():
            # One's own membership events (an invite) are always one's to see.
            own = [e for e in events if e.event.type == "m.room.member"
                   and e.event.state_key == user]
            visible.update(e.event.event_id for e in own)
            others = [e for e in events if e not in own]
            visible.update(e.event.event_id for e in await view.visible(room_id, user, others))
        shown = [n for n in found if n.event_id in visible]
        served = await view.serialize([loaded[n.event_id] for n in shown], user)
        out: list[JsonDict] = []
        for n, event in zip(shown, served, strict=True):
            event = {k: v for k, v in event.items() if k != "room_id"}
            out.append({"actions": n.actions, "event": event, "read": n.read,
                        "room_id": n.room_id, "ts": n.ts})
        body: JsonDict = {"notifications": out}
        if limit and len(found) == limit:
            body["next_token"] = str(found[-1].stream_ordering)
        return body

    router.add("GET", f"{CLIENT_PREFIX}/notifications", notifications)
