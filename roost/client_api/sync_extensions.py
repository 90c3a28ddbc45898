"""How other areas add to a /sync body without editing the builder's core.

Four kinds of extension, registered on the `SyncBuilder` in wiring.py:

- a stream (`builder.add_stream(name, current)`): its position goes into
  every token. `name` must be a field of `StreamToken` (one line in
  client_api/stream_token.py); `current()` returns the stream's persisted-up-to
  position (a `StreamIdGenerator.current`), never a merely allocated one.
  Its writer calls `stream.announce_to(notifier, name)` once and then
  `stream.finish(positions, rooms=..., users=...)` after each commit: the
  stream announces the change when it is readable (storage/streams.py), so
  the waiting long polls and sockets of those users wake, never too early
  and never not at all. (Calling `notifier.notify(name, stream.current)`
  yourself misses wake-ups when writes finish out of order.)
- a top-level section (`builder.add_section(key, build, is_news)`), e.g.
  e2ee's `to_device`, `device_lists`, `device_one_time_keys_count`,
  `device_unused_fallback_key_types`. `build(request)` gets a `SyncRequest`
  (user, device, since token or None for an initial sync, the token the
  answer is built up to, filter) and returns the section's JSON value, or
  None to leave the key out. A section must read exactly the range
  (since, now] of its stream, so the next sync neither repeats nor skips.
  `is_news(value)` says whether the value alone makes the answer worth
  sending (a long poll returns at once rather than waiting): true for
  to-device messages or changed device lists, false for key counts that are
  merely repeated. The default treats any non-empty value as news.
- a per-joined-room field (`builder.add_room_field(key, build)`), e.g.
  push's `unread_notifications` and `unread_thread_notifications`.
  `build(request, room_ids)` is called once per sync with the joined rooms
  the answer holds and returns `{room_id: value}`; rooms missing from the
  result get no key. It never adds a room to the answer on its own: a change
  that should bring a room in (a receipt, an event) already does.

Sections and room fields may also give an `at_once` function: the same value
computed without waiting (no read, nothing awaited), or `LATER` (a room field:
None) when that needs something not in memory. A woken long poll's answer is
built from these alone when every part has one (`SyncBuilder.build_at_once`),
without the dozen coroutines of `build`; it must equal what `build` gives.

A readiness hook (`builder.add_ready(hook)`): what a field's build waits for
before it can answer up to events position N (push's unread counts wait for
evaluation to pass N). The readers a change wakes are held until every hook
has passed the change's position (`SyncBuilder.prepare`), once for all of
them, so their builds run through instead of each waiting in turn. A build
still waits itself if it reaches further than the change that woke it.

And default global account data (`builder.add_default_account_data(type, build)`):
what an initial sync carries for a user who has none of that type stored (push's
`m.push_rules`, the server-default rules a client needs before it changes any).

Keys may not shadow what the builder writes itself (`next_batch`, `rooms`,
`account_data`, `presence`; per room `timeline`, `state`, `ephemeral`,
`account_data`, `summary`); registering one raises at start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from roost.client_api.stream_token import StreamToken
from roost.client_api.sync_filter import SyncFilter

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """What every extension computes from."""

    user_id: str
    device_id: str | None
    since: StreamToken | None  # None: an initial sync
    now: StreamToken  # the token this answer is built up to (its next_batch)
    filter: SyncFilter
    full_state: bool = False


SectionBuild = Callable[[SyncRequest], Awaitable[Any]]
RoomFieldBuild = Callable[[SyncRequest, list[str]], Awaitable[dict[str, Any]]]
SectionAtOnce = Callable[[SyncRequest], Any]  # the value, or LATER
RoomFieldAtOnce = Callable[[SyncRequest, list[str]], "dict[str, Any] | None"]


class _Later:
    """`LATER`: a section's value is not known without waiting (a read, a hook)."""

    def __repr__(self) -> str:
        return "LATER"


LATER: Any = _Later()


def any_value(value: Any) -> bool:
    """The default `is_news`: a non-empty value (or one whose `events` list is non-empty)."""
    if isinstance(value, dict) and set(value) == {"events"}:
        return bool(value["events"])
    return bool(value)


@dataclass(frozen=True, slots=True)
class Section:
    key: str
    build: SectionBuild
    is_news: Callable[[Any], bool] = any_value
    at_once: SectionAtOnce | None = None


@dataclass(frozen=True, slots=True)
class RoomField:
    key: str
    build: RoomFieldBuild
    at_once: RoomFieldAtOnce | None = None


CORE_KEYS = frozenset({"next_batch", "rooms", "account_data", "presence"})
CORE_ROOM_KEYS = frozenset({"timeline", "state", "ephemeral", "account_data", "summary"})
