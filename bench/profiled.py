"""Run Roost with cProfile on only while a benchmark measures.

    ROOST_BENCH_PROFILE_MEASURED=/tmp/x.prof .venv/bin/python bench/big_room.py ...

`bench.common.roost_server` starts Roost through this module when that
variable is set; the benchmark sends SIGUSR1 when a measured phase starts and
SIGUSR2 when it ends (`RoostProcess.profile_on`/`profile_off`). Phases add up,
and the stats are written at each end, so setup (joins, sends) stays out of
the profile. Only the reactor thread is profiled (its CPU time): that is
where Roost's per-request CPU is spent.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
import time
from typing import Any


def main() -> None:
    path = sys.argv[1]
    # The reactor thread's CPU time, not wall time: on a shared machine a function's
    # wall time counts whatever else ran meanwhile.
    profile = cProfile.Profile(time.thread_time)

    def on(*_: Any) -> None:
        profile.enable()

    def off(*_: Any) -> None:
        profile.disable()
        profile.dump_stats(path)

    signal.signal(signal.SIGUSR1, on)
    signal.signal(signal.SIGUSR2, off)
    # The rest is the command line python would get: -m <module> <arguments>.
    flag, module, *arguments = sys.argv[2:]
    assert flag == "-m", "usage: profiled.py OUTPUT -m MODULE ARGS..."
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
