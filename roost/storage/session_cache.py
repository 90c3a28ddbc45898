"""Live login sessions kept in memory, dropped before any revocation answers.

Every authenticated request needs its session's (user, device, admin flag).
Reading that row on each request was about a sixth of the server's CPU when
one message woke twenty long polls (docs/benchmarks.md), so each process keeps
the rows it has read. What makes this exact rather than "fresh enough":

- Every write that ends sessions or changes the admin flag (logout, logout
  all, device deletion, deactivation, password change, admin actions, a
  refresh token reused) goes through a store that calls `revoked` after its
  transaction commits and before it returns: this process's entries of those
  users are gone before the revoking request can answer.
- A row read that overlaps a revocation is not kept: each load takes a ticket
  (`begin_load`, the epoch and the time) before its query, and `put` refuses it
  when any revocation happened since.
- Other processes hear of a revocation through `announce`, which the wiring
  sets by layout (homeserver/session_revocations.py): over the replication bus,
  where every process that caches acknowledges before the revoking request
  answers, and where a process cannot be sure to hear every revocation (its
  bus lease lapsed) it reads rows instead (`trusted`).
- An entry is read again after MAX_AGE_S whatever happens: the bound for
  what no process announces (an operator's SQL, a command beside a single
  process, which waits that long before it answers instead). A session in use
  is read again in the background once it is REFRESH_AFTER_S old (`refresh`,
  set by the store that reads sessions), so a client polling more often than
  that never waits on the database for its session: a thousand long polls
  woken by one message had a third of their answers wait for a re-read.

One cache per database per process (`SessionCache.of(db)`), so that every
store on the database shares it and none can forget to drop its entries.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

# (user_id, device_id, is_admin) of a live session.
SessionInfo = tuple[str, str, bool]

MAX_AGE_S = 5.0
REFRESH_AFTER_S = MAX_AGE_S / 2
MAX_ENTRIES = 200_000

_by_database: weakref.WeakKeyDictionary[Any, SessionCache] = weakref.WeakKeyDictionary()


def _always() -> bool:
    """`trusted` with one process: whatever it holds is sure (no call per request)."""
    return True


class SessionCache:
    """session id -> SessionInfo, for the sessions this process has read lately."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic,
                 max_age_s: float = MAX_AGE_S, max_entries: int = MAX_ENTRIES) -> None:
        self._monotonic = monotonic
        self._max_age = max_age_s
        self._max_entries = max_entries
        self._entries: dict[str, tuple[SessionInfo, float]] = {}
        self._by_user: dict[str, set[str]] = {}
        # Moves on every revocation (and whenever `trusted` may have lapsed): a load
        # that began at an older epoch may have read a row revoked meanwhile.
        self.epoch = 0
        # Whether this process is sure to hear every revocation made elsewhere (set by
        # the wiring: always, with one process; while its bus lease holds, with several).
        self.trusted: Callable[[], bool] = _always
        # Tells the other processes; returns once none of them can still accept the
        # revoked sessions. None: no other process caches (one process).
        self.announce: Callable[[list[str]], Awaitable[None]] | None = None
        # Reads a session again in the background (DeviceStore), for an entry served
        # past REFRESH_AFTER_S; its answer is `put` like any read (or `forget`).
        self.refresh: Callable[[str], None] | None = None
        self._refresh_after = min(REFRESH_AFTER_S, max_age_s / 2)
        self.hits = 0
        self.loads = 0

    @classmethod
    def of(cls, db: Any) -> SessionCache:
        """The cache of this database's sessions in this process."""
        cache = _by_database.get(db)
        if cache is None:
            cache = _by_database[db] = cls()
        return cache

    def get(self, session_id: str) -> SessionInfo | None:
        """The cached session, or None: read the row (and `put` it with a ticket)."""
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        age = self._monotonic() - entry[1]
        trusted = self.trusted
        if age >= self._max_age or (trusted is not _always and not trusted()):
            self._remove(session_id, entry[0][0])
            return None
        if age >= self._refresh_after and self.refresh is not None:
            self.refresh(session_id)
        self.hits += 1
        return entry[0]

    def begin_load(self) -> tuple[int, float]:
        """The ticket a row read takes before its query."""
        return self.epoch, self._monotonic()

    def put(self, session_id: str, info: SessionInfo, ticket: tuple[int, float]) -> None:
        """Keep a row read under `ticket`, unless a revocation may have raced it."""
        epoch, read_at = ticket
        if epoch != self.epoch or not self.trusted():
            return
        self.loads += 1
        old = self._entries.get(session_id)
        if old is not None:
            self._remove(session_id, old[0][0])
        if len(self._entries) >= self._max_entries:
            self.clear()
        self._entries[session_id] = (info, read_at)
        self._by_user.setdefault(info[0], set()).add(session_id)

    def forget(self, session_id: str) -> None:
        """A read found no such session any more (ended without an announcement)."""
        entry = self._entries.get(session_id)
        if entry is not None:
            self._remove(session_id, entry[0][0])

    def drop_users(self, user_ids: Iterable[str]) -> None:
        """Forget every session of these users, in this process only."""
        self.epoch += 1
        for user_id in user_ids:
            for session_id in self._by_user.pop(user_id, ()):
                self._entries.pop(session_id, None)

    def clear(self) -> None:
        self.epoch += 1
        self._entries.clear()
        self._by_user.clear()

    async def revoked(self, user_ids: Iterable[str]) -> None:
        """After a committed write that ended sessions of these users or changed their
        admin flag: drop them here, then wait for every other process to have too."""
        users = sorted(set(user_ids))
        if not users:
            return
        self.drop_users(users)
        if self.announce is not None:
            await self.announce(users)

    def __len__(self) -> int:
        return len(self._entries)

    def _remove(self, session_id: str, user_id: str) -> None:
        self._entries.pop(session_id, None)
        sessions = self._by_user.get(user_id)
        if sessions is not None:
            sessions.discard(session_id)
            if not sessions:
                del self._by_user[user_id]
