"""How live sessions are cached and revoked, by layout (storage/session_cache.py).

- One process: it caches, and hears every revocation it makes itself. A
  command beside it (`roost user deactivate`) cannot reach it, so the command
  answers only once the server's entries are too old to be used.
- Several processes with Redis: revocations travel on the replication bus,
  exactly (storage/session_revocations.py); a command beside them takes part.
- Several processes without Redis: nothing tells one process of another's
  revocation, so none caches: every request reads its session row.
"""

from __future__ import annotations

from typing import Any

from roost.homeserver.config import TOOL, RoostConfig
from roost.storage.database import Database
from roost.storage.session_cache import SessionCache


def wire_session_revocations(config: RoostConfig, db: Database, bus: Any, shared: bool,
                             reactor: Any, closers: list[tuple[str, Any]]) -> Any:
    """Set the cache's trust and announcement for this layout, before the bus starts.
    Returns what to start once it has (`start()`), or None."""
    cache = SessionCache.of(db)
    if not shared:
        return None
    if bus is None:
        cache.trusted = lambda: False
        return None
    from roost.storage.session_revocations import BusRevocations

    revocations = BusRevocations(bus, cache, reactor, caches=config.worker != TOOL)
    closers.append(("session leases", revocations.stop))
    return revocations


def command_beside_one_process(db: Database, reactor: Any) -> None:
    """A command (`roost user ...`) run with no bus: see the module docstring."""
    from roost.storage.session_revocations import outlive_cached_entries

    outlive_cached_entries(SessionCache.of(db), reactor)
