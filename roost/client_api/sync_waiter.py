"""Waiting for a change that concerns a user: the notifier's readers behind /sync's long
poll and the WebSocket's idle push loop.

A `Watch` is one reader, registered on the notifier and woken by the first
change that concerns its user (or its timeout); the `ChangeWaiter` makes them
and holds the readers a new event wakes until the builder is ready for it,
then fires them in one loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from roost.client_api.sync_deadlines import DeadlineQueue
from roost.http.tasks import Wakeup
from roost.storage.notifier import Notifier, StreamChange
from roost.storage.room_state import UserRoomsCache


class ChangeWaiter:
    """Waits for the first notifier change that concerns a user, or a timeout.

    Readers woken by a new event are woken together: their watches are held
    until `prepare(position)` (SyncBuilder.prepare) has done, once, what each
    of their builds would otherwise wait for in turn (reading the new events,
    push evaluation reaching them), and are then fired in one loop, each build
    running through. Waking later changes nothing a build reads: it reads
    (since, now] at the moment it runs.
    """

    def __init__(self, notifier: Notifier, clock: Any, user_rooms: UserRoomsCache,
                 prepare: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.notifier = notifier
        self.clock = clock
        self._user_rooms = user_rooms
        self.rooms_of = user_rooms.cached
        self._prepare = prepare
        self._held: list[Watch] = []
        self._preparing = False
        # The events position the last preparation reached: what was ready for it still is.
        self._ready_upto = 0
        self.deadlines = DeadlineQueue(clock)

    def wait(self, user_id: str, timeout_s: float) -> defer.Deferred[bool]:
        """Fires True if something changed for the user, False on timeout; cancelling it
        stops the watch. (A Deferred, not a coroutine: one frame fewer to resume.) The
        timeout is kept in the waiter's deadline queue (sync_deadlines.py), not a reactor
        timer of its own: a long poll is usually answered long before it."""
        watch: Watch | None = None

        def stop(_: defer.Deferred[bool]) -> None:
            if watch is not None:
                watch.cancel()

        # A Wakeup: the request's Task is resumed by it directly (roost.http.tasks).
        done: defer.Deferred[bool] = Wakeup(stop)
        watch = self.watch(user_id, timeout_s, done.callback, done.errback, queued=True)
        return done

    def watch(self, user_id: str, timeout_s: float, wake: Callable[[bool], None],
              failed: Callable[[Failure], None], queued: bool = False) -> Watch:
        """Call `wake(changed)` once, on the first change for the user or after `timeout_s`
        (on a reactor timer of its own, or with `queued` in the deadline queue).

        No coroutine waits meanwhile: an idle WebSocket holds only the returned
        Watch and its timer. The listener is registered before the user's
        rooms are read, and changes seen meanwhile are checked once the rooms
        are known, so a change landing during that read is not missed. If the
        read fails, `failed` gets the failure instead and nothing is watched.
        """
        watch = Watch(self, user_id, wake)
        self.notifier.add_listener(watch)
        rooms = self.rooms_of(user_id)
        if rooms is not None:  # held: no read, nothing can land meanwhile
            watch.arm(rooms, timeout_s, queued)
        else:
            defer.ensureDeferred(self._arm(watch, timeout_s, failed, queued))
        return watch

    async def _arm(self, watch: Watch, timeout_s: float,
                   failed: Callable[[Failure], None], queued: bool) -> None:
        try:
            rooms = await self._user_rooms.rooms(watch.user_id)
        except Exception:
            watch.failed(Failure(), failed)
            return
        watch.arm(rooms, timeout_s, queued)

    def hold(self, watch: Watch, position: int) -> None:
        """Wake `watch` for a new event at `position` once the builder is ready for it.

        A preparation that was done already up to `position` is not done again: the
        window's read and push evaluation only move forwards. (When the preparation
        finishes at once, as when the events' push evaluation was stored with them, the
        receivers of one change would otherwise each run one of their own.)"""
        if self._prepare is None or position <= self._ready_upto:
            watch.fire(True)
            return
        self._held.append(watch)
        if self._preparing:
            return  # released with the others (a build reaching further waits itself)
        self._preparing = True
        defer.ensureDeferred(self._prepare(position)).addBoth(self._release, position)

    def _release(self, result: Any, position: int) -> None:
        # A failed preparation is not the readers' answer: each build reads for itself
        # and meets (and reports) the failure there, so all are woken regardless.
        self._preparing = False
        if not isinstance(result, Failure):
            self._ready_upto = max(self._ready_upto, position)
        held, self._held = self._held, []
        for watch in held:
            watch.fire(True)


_WATCHED_MEMBERSHIPS = ("join", "invite")


class Watch:
    """One reader waiting for a change that concerns its user (see ChangeWaiter.watch).

    Slots, not closures: every idle socket holds one, so it is kept to a few
    hundred bytes with its timer. `rooms` is the user-rooms cache's own dict
    (room -> membership), shared and never modified once cached.
    """

    __slots__ = ("_waiter", "user_id", "_wake", "_rooms", "_early", "_timer", "_ticket")

    def __init__(self, waiter: ChangeWaiter, user_id: str, wake: Callable[[bool], None]) -> None:
        self._waiter = waiter
        self.user_id = user_id
        self._wake: Callable[[bool], None] | None = wake
        self._rooms: dict[str, str] | None = None
        self._early: list[StreamChange] | None = None  # changes seen before the rooms were known
        self._timer: Any = None
        self._ticket: int | None = None  # in the waiter's deadline queue

    def __call__(self, change: StreamChange) -> None:
        """The notifier listener."""
        if self._wake is None:
            return
        if self._rooms is None:
            if self._early is None:
                self._early = []
            self._early.append(change)
        elif self._concerns(change):
            if change.stream == "events":
                self._waiter.hold(self, change.position)  # woken with the others
            else:
                self.fire(True)

    def _concerns(self, change: StreamChange) -> bool:
        if self.user_id in change.users:
            return True
        rooms = self._rooms
        assert rooms is not None
        if change.stream == "presence":
            return any(self._shares_a_room(user, rooms) for user in change.users)
        return any(rooms.get(room) in _WATCHED_MEMBERSHIPS for room in change.rooms)

    def _shares_a_room(self, user: str, rooms: dict[str, str]) -> bool:
        """Whether a sync of this user carries `user`'s presence: they are both joined to
        some room (the set the builder serves presence for). Unknown here (the other
        user's memberships are not cached): yes, and the build reads the truth."""
        theirs = self._waiter.rooms_of(user)
        if theirs is None:
            return True
        small, large = (theirs, rooms) if len(theirs) <= len(rooms) else (rooms, theirs)
        return any(m == "join" and large.get(room) == "join" for room, m in small.items())

    def arm(self, rooms: dict[str, str], timeout_s: float, queued: bool = False) -> None:
        """The user's rooms are known: check what arrived meanwhile, else wait at most
        `timeout_s` (on a timer, or with `queued` in the waiter's deadline queue)."""
        if self._wake is None:
            return
        self._rooms = rooms
        early, self._early = self._early or (), None
        if any(self._concerns(change) for change in early):
            self.fire(True)
        elif queued:
            self._ticket = self._waiter.deadlines.add(self, timeout_s)
        else:
            self._timer = self._waiter.clock.callLater(timeout_s, self.fire, False)

    def timed_out(self) -> None:
        """The deadline queue's call: the timeout came first."""
        self._ticket = None
        self.fire(False)

    def fire(self, changed: bool) -> None:
        """Wake the reader once; later changes and the timer find nothing to do."""
        wake = self._wake
        self.cancel()
        if wake is not None:
            wake(changed)

    def cancel(self) -> None:
        """Stop watching without waking the reader."""
        self._wake = None
        self._early = None
        self._waiter.notifier.remove_listener(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._ticket is not None:
            self._waiter.deadlines.drop(self._ticket)
            self._ticket = None

    def failed(self, failure: Failure, report: Callable[[Failure], None]) -> None:
        """The rooms could not be read: stop watching and hand the failure on."""
        waiting = self._wake is not None
        self.cancel()
        if waiting:
            report(failure)
