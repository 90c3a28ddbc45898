"""/sync's usual long poll without coroutines: a receiver back with the current token.

Under fan-out every receiver, once answered, comes back at once with the token it
was given, the current one, and waits. The general path runs that as three
coroutines under a Task (JsonResource._handle, sync's handler, `_long_poll`),
suspended on a Wakeup until a change wakes the reader: a coroutine stack made,
suspended and resumed through three frames per delivery, a context copied, an
ApiRequest, a Wakeup and a closure beside the Watch. Here the request is checked
as `sync` and `_long_poll` check it, and when it would wait there it waits here
instead as one object, a `_Poll` (a Watch on the notifier that holds the request),
answered when woken by `build_at_once` and the resource's `answer_taken`, in the
order the general path does things: presence's `polled` first, its
`connection_closed` before the answer is written, the same log line.

Anything else continues as the general path would from where the poll is, in a
coroutine (`continue_taken`): a poll woken with `since` still current (it waits
again), one whose answer needs the database (`build`), a timeout (an empty
delta built), a failure. A request that is not the usual case (a first sync, a
`since` behind, full_state, set_presence other than online, a filter or query
not seen before, a timeout of 0, a guest, a token that needs a read, a user whose
rooms are not cached) is declined with nothing done and takes the general path.
tests/client_api/test_sync_poll.py compares the answers of both paths byte for byte.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.python.failure import Failure
from twisted.web import server

from roost.client_api.resource import (
    ApiRequest,
    JsonDict,
    Requester,
    answer_taken,
    cancelled_taken,
    continue_taken,
    log_unhandled,
)
from roost.client_api.stream_token import StreamToken
from roost.client_api.sync_builder import SyncBuilder
from roost.client_api.sync_filter import SyncFilter
from roost.client_api.sync_waiter import ChangeWaiter, Watch
from roost.http.bodies import RawJson
from roost.http.tasks import Task

MAX_TIMEOUT_MS = 300_000

# (since, filter, full_state, timeout in ms, set_presence), as sync.poll_args checks them.
PollArgs = tuple[str | None, str | None, bool, int, str]
LongPoll = Callable[..., Awaitable[JsonDict | RawJson]]


def _waiting(changed: bool) -> None:
    """A _Poll's `_wake` while it waits (Watch's marker of a reader still waiting)."""


class FastPolls:
    """GET /sync's fast handler (resource.FastHandler): see the module docstring."""

    def __init__(self, builder: SyncBuilder, waiter: ChangeWaiter, presence: Any | None,
                 known_args: Callable[[bytes], PollArgs | None],
                 poll_args: Callable[[ApiRequest], PollArgs],
                 known_filter: Callable[[str, str | None], SyncFilter | None],
                 long_poll: LongPoll) -> None:
        self.builder = builder
        self.waiter = waiter
        self.presence = presence
        self._known_args = known_args
        self._poll_args = poll_args
        self._known_filter = known_filter
        self._long_poll = long_poll

    def __call__(self, request: server.Request, requester: Requester, rid: str,
                 start: float) -> bool:
        """Wait as `sync` would for a poll whose `since` is current; False (nothing done)
        for anything else."""
        args = self._known_args(request.uri)
        if args is None:  # (the first poll with this query: checked as `sync` checks it)
            try:
                args = self._poll_args(ApiRequest(request, "GET", "", {}, requester, b""))
            except Exception:
                return False  # `sync` answers it (the same error)
        since_raw, filter_raw, full_state, timeout_ms, set_presence = args
        if not since_raw or full_state or timeout_ms <= 0 or set_presence != "online":
            return False
        builder = self.builder
        since = builder.now()
        if since_raw != builder.text(since):
            return False
        user = requester.user_id
        filt = self._known_filter(user, filter_raw)
        if filt is None:
            return False
        waiter = self.waiter
        rooms = waiter.rooms_of(user)
        if rooms is None:
            return False
        # Taken: as `sync` from here, then `_long_poll` up to its wait.
        presence = self.presence
        if presence is not None:
            presence.polled(user)
        clock = waiter.clock
        deadline = clock.seconds() + min(timeout_ms, MAX_TIMEOUT_MS) / 1000
        poll = _Poll(self, user, request, rid, start, since, filt, requester.device_id,
                     deadline)
        request.when_lost(poll.lost)  # type: ignore[attr-defined]
        now = builder.now()
        if now is not since and not (now.events == since.events and now == since):
            poll.go_on(self._continued(poll, True))  # (`polled` changed presence, say)
            return True
        remaining = deadline - clock.seconds()
        if remaining <= 0:  # (never with a real clock: the timeout is at least 1 ms)
            poll.go_on(self._timed_out(poll))
            return True
        waiter.notifier.add_listener(poll)  # (ChangeWaiter.watch, with the rooms held)
        rooms = waiter.rooms_of(user)
        if rooms is None:  # (no longer held: `_long_poll` waits, reading them)
            poll.cancel()
            poll.go_on(self._continued(poll, True))
            return True
        poll.arm(rooms, remaining, True)
        return True

    def woken(self, poll: _Poll, changed: bool) -> None:
        """The poll stopped waiting: `_long_poll`'s steps after its wait, answered here
        when `build_at_once` answers, else continued in a coroutine. Nothing escapes to
        the notifier (as nothing escaped the general path's Task)."""
        try:
            if not changed:
                poll.go_on(self._timed_out(poll))
                return
            builder = self.builder
            now = builder.now()
            since = poll.since
            if now is since or (now.events == since.events and now == since):
                poll.go_on(self._continued(poll, True))  # nothing new for it: wait again
                return
            try:
                answered = builder.build_at_once(poll.user_id, since, poll.filt,
                                                 poll.device_id)
            except Exception as e:  # (answered as `_handle` answers a handler's failure)
                poll.go_on(self._failed(poll, e))
                return
            if answered is None:
                poll.go_on(self._continued(poll, False))
                return
            self._closed(poll)
            answer_taken(poll.request, poll.rid, poll.start, poll.user_id, 200, answered[0])
        except Exception:
            log_unhandled(Failure())

    def gone(self, poll: _Poll) -> None:
        """The client went away while the poll waited: what cancelling `_long_poll` did."""
        self._closed(poll)
        cancelled_taken(poll.request)

    def _closed(self, poll: _Poll) -> None:
        """The poll's end for presence, as `sync`'s `finally` tells it."""
        if self.presence is not None:
            self.presence.connection_closed(poll.user_id)

    async def _timed_out(self, poll: _Poll) -> JsonDict | RawJson:
        try:
            body, _ = await self.builder.build(poll.user_id, poll.since, poll.filt,
                                               device_id=poll.device_id)
            return body  # the timeout: an empty delta, with the sections' current values
        finally:
            self._closed(poll)

    async def _continued(self, poll: _Poll, at_once: bool) -> JsonDict | RawJson:
        try:
            return await self._long_poll(self.builder, self.waiter, poll.user_id,
                                         poll.device_id, poll.since, poll.filt, False, 0.0,
                                         deadline=poll.deadline, at_once=at_once)
        finally:
            self._closed(poll)

    async def _failed(self, poll: _Poll, error: Exception) -> JsonDict | RawJson:
        try:
            raise error
        finally:
            self._closed(poll)


class _Poll(Watch):
    """A long poll waiting without a coroutine: the Watch on the notifier and the request
    it answers, in one object."""

    __slots__ = ("_polls", "request", "rid", "start", "since", "filt", "device_id",
                 "deadline", "_task")

    def __init__(self, polls: FastPolls, user_id: str, request: server.Request, rid: str,
                 start: float, since: StreamToken, filt: SyncFilter, device_id: str | None,
                 deadline: float) -> None:
        Watch.__init__(self, polls.waiter, user_id, _waiting)
        self._polls = polls
        self.request = request
        self.rid = rid
        self.start = start
        self.since = since
        self.filt = filt
        self.device_id = device_id
        self.deadline = deadline
        self._task: Task | None = None  # the coroutine it continues in, if any

    def fire(self, changed: bool) -> None:
        """Watch.fire: stop watching, once, and go on as the woken `_long_poll` would."""
        if self._wake is None:
            return
        self.cancel()
        self._polls.woken(self, changed)

    def go_on(self, work: Awaitable[JsonDict | RawJson]) -> None:
        """Continue in a coroutine (cancelled if the client goes), not waiting here."""
        self._wake = None
        self._task = continue_taken(self.request, self.rid, self.start, self.user_id, work)

    def lost(self) -> None:
        """The client went away before the answer."""
        if self._wake is not None:
            self.cancel()
            self._polls.gone(self)
        elif self._task is not None:
            self._task.cancel()
