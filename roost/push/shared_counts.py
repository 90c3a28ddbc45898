"""Unread counts kept exact in processes that do not run push evaluation (issue 17).

Among several processes one runs the pusher role: its evaluator stores each batch's
notifications and adds them to its own `UnreadCache` (push/counts.py). The client
readers serve /sync too, and reading the counts from PostgreSQL on every answer cost
them most of a second per wake-up of a thousand long polls. So the evaluator's cache
publishes what it adds (`PublishingCache`), and each reader applies it to a cache of
its own (`FollowedCounts`), in the evaluator's order:

- each message carries the evaluator's position before and after its batch, and the
  evaluator's run (new at every start, and whenever its own cache is cleared: a batch
  whose commit is unknown). A reader applies a message only when it continues the
  chain it holds (same run, `before` = the position it holds); otherwise it may have
  missed one (a message lost while Redis was away, a restarted evaluator, a restarted
  reader) and drops every entry: each (user, room) is then read from storage once and
  kept again;
- an entry read from storage is kept only when the read (one statement,
  `PushActionStore.unread_counts_at`) is as of the very position the reader holds and
  nothing changed the cache meanwhile: a read that saw a batch whose message has not
  arrived yet is used once, not kept, so no batch is counted twice;
- receipts drop the user's entries as in one process (the receipts stream is
  announced here too), and so does the senders' own reading, carried in the message;
- /sync waits (`reached`) until the reader holds the position of the events it
  serves, as one process waits for its evaluator. While the bus is down, or after a
  wait timed out with no message since, a reader neither waits nor trusts its cache:
  it reads storage, as before this module existed, and after Redis comes back it
  starts a new chain.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from roost.push.counts import Counts, UnreadCache
from roost.push.waiters import PositionWaiters
from roost.storage.push import PushActionStore

KIND = "unread"
Publish = Callable[[str, dict[str, Any]], Any]


def _new_run() -> str:
    return os.urandom(6).hex()


class PublishingCache(UnreadCache):
    """The evaluator's cache in a process among several: every batch it adds, and every
    time it is cleared, goes out on the bus."""

    def __init__(self, publish: Publish, position: Callable[[], int]) -> None:
        """`position`: the evaluator's position (the batch's start, when `add` is called)."""
        super().__init__()
        self._publish = publish
        self._position = position
        self.run = _new_run()

    def add(self, rows: list[Any], senders: Iterable[tuple[str, str]] = (),
            position: int = 0) -> None:
        senders = list(senders)
        super().add(rows, senders, position)
        self._publish(KIND, {
            "r": self.run, "f": self._position(), "p": position,
            "a": [[row[2], row[4], 1 if row[6] else 0, row[8]] for row in rows],
            "d": [list(pair) for pair in senders]})

    def clear(self) -> None:
        """A batch's commit is unknown: readers start over too (a new run)."""
        super().clear()
        self.run = _new_run()
        self._publish(KIND, {"r": self.run})


class FollowedCache(UnreadCache):
    """A reader's cache: filled from storage only at the position it follows."""

    def __init__(self, follower: FollowedCounts) -> None:
        super().__init__()
        self._follower = follower

    def held(self, user_id: str, room_ids: list[str], position: int) -> dict[str, Counts] | None:
        if not self._follower.trusted(position):
            return None
        return super().held(user_id, room_ids, position)

    async def read_through(self, user_id: str, room_ids: list[str], store: PushActionStore,
                           position: int) -> dict[str, Counts]:
        follower = self._follower
        if not follower.trusted(position):
            self.misses += len(room_ids)
            return (await store.unread_counts_at(user_id, room_ids))[0]
        counts, missing = self.get(user_id, room_ids)
        if missing:
            generation, held = self.generation, follower.position
            read, at = await store.unread_counts_at(user_id, missing)
            if at == held and follower.position == held and follower.live():
                self.put(user_id, read, missing, generation)
            counts.update(read)
        return counts

    def apply(self, adds: list[Any], drops: list[Any]) -> None:
        """A batch of the evaluator: [room, thread, highlight, users] rows, [user, room]
        pairs whose entries are dropped (their sender read the room)."""
        self.generation += 1
        entries = self._entries
        for user_id, room_id in drops:
            entries.pop((user_id, room_id), None)
        if not entries:
            return
        for room_id, thread, highlight, users in adds:
            for user_id in users:
                entry = entries.get((user_id, room_id))
                if entry is not None:
                    count, lit = entry.get(thread, (0, 0))
                    entry[thread] = (count + 1, lit + highlight)


class FollowedCounts:
    """What UnreadCounts (client_api/notifications.py) asks of the evaluator — `counts`
    and `reached` — in a process that follows another process's evaluation."""

    def __init__(self, clock: IReactorTime, live: Callable[[], bool]) -> None:
        """`live`: whether the bus is up (messages are arriving)."""
        self.counts = FollowedCache(self)
        self.live = live
        self.position: int | None = None  # the evaluator's, as of the last message applied
        self._run: str | None = None
        self._stale = True  # a wait timed out, and no message came since
        self._waiters = PositionWaiters(clock, self._timed_out)
        self.gaps = 0

    def trusted(self, position: int) -> bool:
        """Whether the cache may serve an answer for events `position`."""
        return (not self._stale and self.position is not None and self.position >= position
                and self.live())

    # -- the bus -------------------------------------------------------------------

    def heard(self, _instance: str, message: dict[str, Any]) -> None:
        """A message of the evaluator's cache (PublishingCache)."""
        run, before, after = message["r"], message.get("f"), message.get("p")
        if after is None:  # the evaluator cleared its cache: start over
            self.restart(run)
            return
        if run == self._run and before == self.position and self.position is not None:
            self.counts.apply(message["a"], message["d"])
        else:
            self.gaps += 1
            self.counts.clear()
            self._run = run
        self.position = int(after)
        self._stale = False
        self._waiters.release(self.position)

    def restart(self, run: str | None = None) -> None:
        """Messages may have been missed (Redis reconnected, the evaluator cleared): drop
        every entry, and keep none until the next message starts a chain."""
        self.counts.clear()
        self._run = run
        self.position = None
        self._waiters.release_all()  # nobody waits for a chain that is gone

    def receipts_moved(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.counts.drop(pairs)

    # -- waiting -------------------------------------------------------------------

    def reached(self, position: int, timeout_s: float) -> defer.Deferred[None]:
        """Fires once the evaluator's position heard here covers `position`, or after
        `timeout_s` (then the cache is not trusted until the next message)."""
        if self._stale or self.position is None or self.position >= position \
                or not self.live():
            return defer.succeed(None)
        return self._waiters.wait(position, timeout_s)

    def has_reached(self, position: int) -> bool:
        """Whether `reached(position, ...)` would fire at once."""
        return self._stale or self.position is None or self.position >= position \
            or not self.live()

    def _timed_out(self) -> None:
        self._stale = True  # the evaluator, or its messages, are not coming
