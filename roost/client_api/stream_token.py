"""The one stream token: a position in every stream a client can sync.

Every endpoint that takes a token the spec lets a client copy from /sync
(`/sync?since`, `/messages?from&to`, `/members?at`, the WebSocket's `since`,
and the `start`/`end` that `/context` and `/messages` hand back) parses it
here, with `StreamToken.parse`, so a token one endpoint gives is accepted by
every other.

Written form: `s<events>_<typing>_<receipts>_<account_data>_<presence>...`,
one decimal position per stream, in the order of the fields below.

- Older, shorter tokens stay valid: a missing stream reads as position 0
  (which makes the next /sync send that stream from its start, as an initial
  sync would, rather than lose anything). `s<N>` is the shortest token of all:
  a position in the events stream alone. That is what /messages, /context and
  /relations hand out, so those keep working unchanged, and a full sync token
  given to /messages means its events position.
- Only the events position may be negative (`s-12`): history backfilled from
  other servers is numbered downwards below zero (see client_api/messages.py).
- A token naming more streams than this server knows is refused (400
  M_INVALID_PARAM), as is anything else malformed; no position has more than
  18 digits, so none overflows PostgreSQL's bigint.

Adding a stream is one line: a new field at the END of `StreamToken` with
default 0 (never reorder or remove one: tokens clients hold would change
meaning). Its current position comes from `SyncBuilder.add_stream`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

from roost.client_api.errors import invalid_param


@dataclass(frozen=True, slots=True)
class StreamToken:
    events: int = 0
    typing: int = 0
    receipts: int = 0
    account_data: int = 0
    presence: int = 0
    # New streams go here, one line each, default 0 (e2ee: to_device, device_lists).
    to_device: int = 0
    device_lists: int = 0

    def __str__(self) -> str:
        return "s" + "_".join(str(getattr(self, name)) for name in STREAMS)

    @classmethod
    def parse(cls, raw: str, name: str = "since") -> StreamToken:
        """A token from its written form; 400 M_INVALID_PARAM naming `name` if malformed.

        Every receiver woken by one message comes back with the same `since`, so
        recent answers are kept (a token is immutable; bounded)."""
        known = _PARSED.get(raw) if isinstance(raw, str) else None
        if known is not None:
            return known
        match = _TOKEN_RE.match(raw) if isinstance(raw, str) else None
        if match is None:
            raise invalid_param(f"{name} is not a valid stream token")
        parts = [match.group(1)] + (match.group(2)[1:].split("_") if match.group(2) else [])
        if len(parts) > len(STREAMS):
            raise invalid_param(f"{name} names streams this server does not know")
        token = cls(*(int(p) for p in parts))
        if len(_PARSED) >= MAX_PARSED:
            _PARSED.clear()
        _PARSED[raw] = token
        return token

    def with_positions(self, **positions: int) -> StreamToken:
        return replace(self, **positions)

    def position(self, stream: str) -> int:
        return int(getattr(self, stream))


STREAMS: tuple[str, ...] = tuple(f.name for f in fields(StreamToken))
MAX_PARSED = 4096
_PARSED: dict[str, StreamToken] = {}  # written form -> token, for recent tokens
_TOKEN_RE = re.compile(r"^s(-?[0-9]{1,18})((?:_[0-9]{1,18})*)\Z")


def events_position(raw: str | None, name: str) -> int | None:
    """The events position of an optional token argument (`from`, `to`, `at`), None if absent."""
    if raw is None:
        return None
    return StreamToken.parse(raw, name).events
