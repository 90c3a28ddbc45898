"""What every socket shares: its limits and timers, and the server's parts it uses.

One SocketServices per server, held by the socket factory (websocket.py);
docs/websocket.md documents the limits' defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from roost.client_api.resource import Authenticator, JsonResource
from roost.client_api.sync_builder import SyncBuilder
from roost.client_api.sync_waiter import ChangeWaiter


@dataclass(frozen=True)
class SocketSettings:
    """Limits and timers of every socket; the defaults are the documented ones."""

    max_message_bytes: int = 64 * 1024
    max_pending_bytes: int = 1024 * 1024
    drain_timeout_s: float = 30.0
    recheck_s: float = 30.0
    auth_timeout_s: float = 30.0
    ping_interval_s: float = 30.0
    ping_timeout_s: float = 20.0
    max_queued_requests: int = 32


@dataclass(frozen=True)
class SocketServices:
    """What every socket uses, shared: one instance per server, held by the factory."""

    authenticator: Authenticator
    api: JsonResource
    builder: SyncBuilder
    waiter: ChangeWaiter
    clock: Any
    presence: Any | None = None
    settings: SocketSettings = SocketSettings()
