"""Counts of the events this server fetches from other servers, and of those fetched again.

An event should cross once: in the transaction that carries it, or, when a
transaction leaves a gap, through one fetch. Every path that asks another
server for events (`/event`, `/get_missing_events`, `/state_ids`,
`/event_auth`, `/backfill`) reports here what it asked and the event ids it got
back, so a benchmark (through the metrics listener) or a test (through
`times_fetched`) can see whether any event was fetched twice.

"Again" is judged against the ids fetched recently: the last `remember` ids,
oldest forgotten first, so the memory stays bounded on a long-running server.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

REMEMBER = 100_000


class EventFetches:
    """Per-endpoint counters (exported to Prometheus when a registry is given) and a
    bounded memory of fetched event ids."""

    def __init__(self, registry: Any = None, remember: int = REMEMBER) -> None:
        # registry None (no metrics listener): counted here, not exported, and
        # prometheus_client is never imported (a megabyte a server need not hold).
        self._exported = _Exported(registry) if registry is not None else None
        self._remember = max(1, remember)
        self._seen: OrderedDict[str, int] = OrderedDict()
        self.fetched_total = 0
        self.fetched_again_total = 0

    def requested(self, endpoint: str) -> None:
        """One request was sent to `endpoint` (whatever it brought back)."""
        if self._exported is not None:
            self._exported.requests.labels(endpoint).inc()

    def received(self, endpoint: str, event_ids: Iterable[str]) -> None:
        """Events `endpoint` returned, by id (each distinct id of one answer counted once)."""
        for event_id in dict.fromkeys(event_ids):
            times = self._seen.pop(event_id, 0) + 1
            self._seen[event_id] = times
            if self._exported is not None:
                self._exported.fetched.labels(endpoint).inc()
            self.fetched_total += 1
            if times > 1:
                if self._exported is not None:
                    self._exported.again.labels(endpoint).inc()
                self.fetched_again_total += 1
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)

    def times_fetched(self, event_id: str) -> int:
        """How often `event_id` was fetched (0 if never, or forgotten)."""
        return self._seen.get(event_id, 0)


class _Exported:
    """The Prometheus side of the counts, in the registry of this homeserver."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter

        self.requests = Counter(
            "roost_federation_fetch_requests", "Requests to other servers for events",
            ["endpoint"], registry=registry)
        self.fetched = Counter(
            "roost_federation_events_fetched", "Events received from fetch requests",
            ["endpoint"], registry=registry)
        self.again = Counter(
            "roost_federation_events_fetched_again",
            "Events received from fetch requests that had been fetched before",
            ["endpoint"], registry=registry)
