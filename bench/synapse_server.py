"""A real Synapse for the benchmarks, measured the way bench/common.py measures Roost.

`--server synapse` in bench/sync_fanout.py and bench/big_room.py runs the same
workload against Synapse (from `.venv-synapse`, the pinned matrix-synapse that
`make test` installs), so every figure can be given as a ratio to Synapse on the
same machine at the same time. Synapse is started by tests/federation/synapse_harness
(loopback only, its own throwaway PostgreSQL database on the server Roost's benches
use), with what a fair comparison needs on top:

- rate limits raised far above any bench's rate (Roost's bench config does the same);
- bcrypt rounds 4, as in Roost's bench config (registration is not measured, but
  2,000 registrations at Synapse's default 12 rounds would take many minutes);
- its log at WARNING, as Roost's bench logs (Synapse's default writes a line per request);
- its database pool at Synapse's defaults (cp_min 5, cp_max 10); caches at their defaults
  but one: `sync_response_cache_duration` 0 (default 2 minutes), else a repeated identical
  /sync (big_room.py's newcomer's initial sync, timed 5 times after a warm-up) is answered
  from Synapse's cache of whole answers while Roost builds each. Requests in flight
  together are still shared; the fan-out's polls, each with its own `since`, never were.

One Synapse process (no workers), like the single Roost process of these benches.
Its CPU is the process's (every thread); its "reactor" CPU is the main thread's.
ROOST_BENCH_SYNAPSE_CONFIG (a JSON mapping, merged last) changes more of its config
for a sensitivity check, e.g. '{"presence": {"enabled": false}}'.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from bench.common import RoostProcess

_UNLIMITED = {"per_second": 100000, "burst_count": 100000}
_LOG_CONFIG = """version: 1
formatters: {plain: {format: '%(asctime)s %(name)s %(levelname)s %(message)s'}}
handlers: {console: {class: logging.StreamHandler, formatter: plain}}
root: {level: WARNING, handlers: [console]}
disable_existing_loggers: false
"""


@dataclass
class SynapseProcess(RoostProcess):
    """A Synapse process with RoostProcess's readings (CPU, main thread, RSS) and no
    profiling switch (SIGUSR1 would end Synapse)."""

    label: ClassVar[str] = "synapse"

    def profile_on(self) -> None:
        pass

    def profile_off(self) -> None:
        pass


def bench_overrides(folder: str) -> dict[str, Any]:
    """The config keys a benchmark changes from the interop tests' Synapse config."""
    log_config = os.path.join(folder, "log.yaml")
    with open(log_config, "w") as f:
        f.write(_LOG_CONFIG)
    limits = {key: _UNLIMITED for key in ("rc_message", "rc_registration", "rc_joins_per_room",
                                          "rc_invites", "rc_room_creation")}
    extra = json.loads(os.environ.get("ROOST_BENCH_SYNAPSE_CONFIG") or "{}")
    return {
        **limits,
        "rc_login": {"address": _UNLIMITED, "account": _UNLIMITED,
                     "failed_attempts": _UNLIMITED},
        "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
        "rc_presence": {"per_user": _UNLIMITED},
        "bcrypt_rounds": 4,
        "database": {"args": {"cp_min": 5, "cp_max": 10}},  # Synapse's defaults
        "caches": {"sync_response_cache_duration": 0},
        "log_config": log_config,
        **extra,
    }


@contextlib.contextmanager
def synapse_server() -> Iterator[SynapseProcess]:
    """A Synapse on loopback for one benchmark run; stopped and its database dropped after."""
    from tests.federation.synapse_harness import SYNAPSE_PYTHON, _start, _stop

    if not os.path.exists(SYNAPSE_PYTHON):
        raise SystemExit(f"no {SYNAPSE_PYTHON}: `make test` installs the pinned matrix-synapse")
    folder = tempfile.mkdtemp(prefix="roost-bench-synapse-")
    node = _start(folder, bench_overrides(folder))
    try:
        yield SynapseProcess(node.process, node.client_url, node.database,  # type: ignore[attr-defined]
                             node.name)
    finally:
        _stop(node)


def server_for(kind: str, **roost_options: Any) -> contextlib.AbstractContextManager[Any]:
    """The server a bench's `--server` names: Roost (with its options) or Synapse."""
    if kind == "synapse":
        return synapse_server()
    from bench.common import roost_server

    return roost_server(**roost_options)
