"""How the server process's C allocator (glibc malloc) hands memory back.

Python objects larger than 512 bytes, and everything libpq allocates, come
from malloc, and after the workloads of bench/memory.py a third of Roost's
growth was malloc keeping memory it no longer used (docs/benchmarks.md):

- glibc gives each thread that allocates an arena of its own (up to eight per
  core), and an arena keeps its high-water mark. The database pool runs one
  thread per connection, each reading rows and event JSON, so 15 arenas held
  about 8 MiB. At most two arenas (the main one, and one the threads share)
  keep that to one high-water mark; the threads allocate while holding the
  GIL, so they hardly contend for the arena's lock.
- glibc raises its mmap threshold each time a large mmapped block is freed,
  so later large blocks (a sync response, a page of rows) come from the heap
  and are not returned when freed. A fixed threshold of 128 KiB (glibc's
  starting value) keeps them mmapped and returned.

- glibc gives memory back to the system only from the top of a heap. A burst of
  requests (bench/memory.py's 5,000 sends, 100 at once per room) leaves free chunks
  between the objects that outlive it, and those pages stay resident until malloc
  reuses them: about 1.5 MiB after that workload. `malloc_trim(0)` hands every whole
  free page inside the heaps back (madvise), so the server runs it once a second
  (`trim_periodically`): 0.05-0.2 ms each with these heaps, and memory a later burst
  needs again costs a page fault per page.

An operator's own MALLOC_ARENA_MAX or MALLOC_MMAP_THRESHOLD_ wins. On a libc
other than glibc nothing is changed.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: `roost run` imports this module before Twisted
    from twisted.internet.interfaces import IReactorTime
    from twisted.internet.task import LoopingCall

logger = logging.getLogger(__name__)

# mallopt() parameters, from glibc's malloc.h.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

ARENA_MAX = 2
MMAP_THRESHOLD = 128 * 1024
# Seconds between two malloc_trim(0) calls of a running server (trim_periodically).
TRIM_INTERVAL = 1.0
# Young objects (net container allocations) before the cyclic collector runs; Python's
# default is 700. The other two thresholds keep Python's defaults.
YOUNG_THRESHOLD = 10_000


def skip_http2() -> bool:
    """Keep Twisted's HTTP/2 support out of the server process; call it before anything
    imports twisted.web.http. Returns whether it was still in time.

    twisted.web.http imports its HTTP/2 channel (and the h2, hpack, hyperframe and
    priority packages, about 1.5 MiB resident) whenever the h2 package is installed, as
    the test extras install it. Roost never serves HTTP/2: its listeners offer no ALPN,
    and a cleartext upgrade to h2c is not taken by Twisted either, so that code would
    never run. Marking the module absent makes Twisted's own fallback apply
    (`H2_ENABLED` false), as on an install without h2.
    """
    if "twisted.web.http" in sys.modules:
        return False
    sys.modules.setdefault("twisted.web._http2", None)  # type: ignore[arg-type]
    return True


def tune_allocator() -> bool:
    """Set the arena count and mmap threshold; call it before any thread starts.

    Returns whether glibc's mallopt was found (False: another libc, unchanged).
    """
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    if "MALLOC_ARENA_MAX" not in os.environ and not mallopt(M_ARENA_MAX, ARENA_MAX):
        logger.warning("mallopt(M_ARENA_MAX) failed; malloc arenas stay per thread")
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and not mallopt(M_MMAP_THRESHOLD,
                                                                  MMAP_THRESHOLD):
        logger.warning("mallopt(M_MMAP_THRESHOLD) failed")
    return True


def _glibc_mallopt() -> ctypes._CFuncPtr | None:
    """mallopt from the C library this process already runs on, if that is glibc."""
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded, the C library's among them
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def glibc_malloc_trim() -> Callable[[], bool] | None:
    """`malloc_trim(0)` of the C library this process runs on, if that is glibc: gives
    the whole free pages inside malloc's heaps back to the system; True when it did."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return lambda: bool(trim(0))


def trim_periodically(started: Any, clock: IReactorTime,
                      trim: Callable[[], bool] | None = None,
                      interval: float = TRIM_INTERVAL) -> LoopingCall | None:
    """Once the server has started (`started` fires), give malloc's free pages back to
    the system every `interval` seconds (see the module's docstring), so that what a
    burst of requests freed does not stay resident. `trim` defaults to glibc's
    malloc_trim; on another libc nothing runs (None is returned). The call runs on the
    reactor thread: ctypes releases the GIL for it, and it locks each malloc arena only
    while it walks that arena's free chunks."""
    from twisted.internet.task import LoopingCall

    trim = trim if trim is not None else glibc_malloc_trim()
    if trim is None:
        return None
    loop = LoopingCall(trim)
    loop.clock = clock

    def begin(result: Any) -> Any:
        loop.start(interval, now=False)
        return result

    started.addCallback(begin)
    return loop


def tune_collector_after_start(started: Any) -> None:
    """Once the server has started (`started` fires): keep the cyclic garbage
    collector off what start-up built, and run it less often.

    Start-up leaves about 75,000 tracked objects (modules, classes, wiring)
    that live as long as the process; every full collection walked them all
    again. `gc.freeze()` moves them out of the collector's sight. And a /sync
    or a send frees almost everything it makes by reference counting, so a
    young-generation pass every 700 net allocations (several per request under
    fan-out) found next to nothing: with both, the collector's share of Roost's
    CPU under bench/sync_fanout.py went from about 1.6 ms per message to none
    in the measured phase (docs/benchmarks.md). Only for the server process:
    a test process building many homeservers must not freeze each one's garbage.
    """

    def tune(result: Any) -> Any:
        gc.collect()
        gc.freeze()
        gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        return result

    started.addCallback(tune)

