"""Presence: online, unavailable, offline; GET/PUT /presence/{userId}/status.

Presence is kept in memory, not in PostgreSQL. It is a fact about live
connections to this process: after a restart nobody is connected, so
everyone is offline, which is exactly what a fresh tracker says. Each change
still takes a position in the "presence" stream and is announced through
the notifier, so /sync and the WebSocket read it like any other stream.

A user is online while they sync or hold a socket. With no activity for
`idle_timeout_s` they become unavailable; once their last sync or socket has
ended they become offline `offline_timeout_s` later, unless they come back
first. Timers run on the injected clock, so tests drive them with
`twisted.internet.task.Clock`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from roost.client_api.errors import forbidden, invalid_param, missing_param, not_found
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.storage.accounts import UserStore
from roost.storage.notifier import Notifier
from roost.storage.streams import StreamIdGenerator

if TYPE_CHECKING:  # txredisapi is imported only when Redis is on
    from roost.storage.replication import ReplicationBus

STATES = ("online", "unavailable", "offline")
# A status message longer than this is refused (400): it is pushed to everyone who
# shares a room with the user, on every change.
MAX_STATUS_MSG_LEN = 1024
# Remote users' presence is kept for at most this many users in all: past it, offline
# ones are forgotten first, and updates for new remote users are dropped.
MAX_TRACKED_USERS = 50_000

# (requester, user) -> whether they share a room (who may read whose presence).
SharesRoom = Callable[[str, str], Awaitable[bool]]


@dataclass
class _UserPresence:
    presence: str = "offline"
    status_msg: str | None = None
    last_active_ms: int | None = None
    position: int = 0  # the stream position of the last change
    connections: int = 0
    idle_call: IDelayedCall | None = None
    offline_call: IDelayedCall | None = None
    # When the timers are due (clock seconds). Activity moves these, not the timers: a
    # timer that fires early re-arms for what remains (see _restart_idle_timer).
    idle_at: float = 0.0
    offline_at: float = 0.0


class PresenceTracker:
    def __init__(
        self,
        clock: IReactorTime,
        notifier: Notifier,
        stream: StreamIdGenerator,
        idle_timeout_s: float = 300,
        offline_timeout_s: float = 30,
    ) -> None:
        self._clock = clock
        self._stream = stream
        stream.announce_to(notifier, "presence")
        self._idle_timeout = idle_timeout_s
        self._offline_timeout = offline_timeout_s
        self._stopped = False
        # One small record per user seen since start (offline ones included, so
        # that a later /sync still learns they went offline).
        self._users: dict[str, _UserPresence] = {}
        self._bus: ReplicationBus | None = None

    @property
    def current(self) -> int:
        """The presence stream's position: what a sync token records."""
        return self._stream.current

    # -- activity and connections --------------------------------------------

    def user_active(self, user_id: str) -> None:
        """The user did something (a /sync, a socket message): online, idle timer restarted."""
        state = self._user(user_id)
        state.last_active_ms = self._now_ms()
        self._restart_idle_timer(user_id, state)
        if state.connections == 0:
            self._restart_offline_timer(user_id, state)
        if state.presence != "online":
            self._change(user_id, state, "online", state.status_msg)

    def polled(self, user_id: str) -> None:
        """A long poll with set_presence=online began: `user_active` and `connection_opened`
        in one look-up. The offline timer is not restarted here: the connection now open
        keeps the user online, and its end restarts that timer (connection_closed) later
        than this would have."""
        state = self._users.get(user_id) or self._user(user_id)
        now = self._clock.seconds()
        state.last_active_ms = int(now * 1000)
        # _restart_idle_timer, inline: this runs on every long poll.
        state.idle_at = now + self._idle_timeout
        call = state.idle_call
        # (call.active(), inline: a DelayedCall's own test of these two flags)
        if (call is None or call.cancelled or call.called) and not self._stopped:
            state.idle_call = self._clock.callLater(self._idle_timeout, self._went_idle, user_id)
        if state.presence != "online":
            self._change(user_id, state, "online", state.status_msg)
        state.connections += 1

    def connection_opened(self, user_id: str) -> None:
        """A long-poll /sync or a socket began: the user cannot go offline while it lasts
        (a pending offline timer finds the connection and does nothing)."""
        state = self._user(user_id)
        state.connections += 1

    def connection_closed(self, user_id: str) -> None:
        """A /sync or socket ended; after the last one, offline follows the timeout."""
        state = self._users.get(user_id) or self._user(user_id)
        state.connections = max(0, state.connections - 1)
        if state.connections == 0 and state.presence != "offline":
            # _restart_offline_timer, inline: this runs at the end of every long poll.
            state.offline_at = self._clock.seconds() + self._offline_timeout
            call = state.offline_call
            if not self._stopped and (call is None or call.cancelled or call.called):
                state.offline_call = self._clock.callLater(self._offline_timeout,
                                                           self._went_away, user_id)

    async def set_presence(self, user_id: str, presence: str, status_msg: str | None) -> None:
        """What the user asks for (PUT /presence, or /sync's set_presence)."""
        if presence not in STATES:
            raise invalid_param(f"presence must be one of {', '.join(STATES)}")
        if status_msg is not None and len(status_msg) > MAX_STATUS_MSG_LEN:
            raise invalid_param(f"status_msg is longer than {MAX_STATUS_MSG_LEN} characters")
        state = self._user(user_id)
        state.last_active_ms = self._now_ms()
        if presence == "offline":
            self._cancel_timers(state)
        else:
            if presence == "online":
                self._restart_idle_timer(user_id, state)
            else:
                _cancel(state.idle_call)
                state.idle_call = None
            if state.connections == 0:
                self._restart_offline_timer(user_id, state)
        if (presence, status_msg) != (state.presence, state.status_msg):
            self._change(user_id, state, presence, status_msg)

    async def set_remote_presence(self, user_id: str, presence: str,
                                  status_msg: str | None) -> None:
        """A presence EDU from another server: as set_presence, but a user not yet tracked
        is only taken while fewer than MAX_TRACKED_USERS are (offline ones are forgotten
        first), so other servers cannot make this one's memory grow without bound."""
        if user_id not in self._users and len(self._users) >= MAX_TRACKED_USERS:
            self._forget_offline(len(self._users) - MAX_TRACKED_USERS + 1)
            if len(self._users) >= MAX_TRACKED_USERS:
                return
        await self.set_presence(user_id, presence, status_msg)

    def _forget_offline(self, count: int) -> None:
        """Forget up to `count` offline users with nothing pending, oldest first."""
        idle = [u for u, s in self._users.items() if s.presence == "offline"
                and s.connections == 0 and s.idle_call is None and s.offline_call is None]
        for user_id in idle[:count]:
            del self._users[user_id]

    def stop(self) -> None:
        """Cancel every pending timer (shutdown): nobody goes idle or offline after it,
        and no timer starts again (a late request or remote EDU may still arrive)."""
        self._stopped = True
        for state in self._users.values():
            self._cancel_timers(state)

    # -- reading ---------------------------------------------------------------

    def get(self, user_id: str) -> JsonDict:
        """The user's presence as GET /presence and m.presence content show it."""
        state = self._users.get(user_id) or _UserPresence()
        result: JsonDict = {"presence": state.presence,
                            "currently_active": state.presence == "online"}
        if state.last_active_ms is not None:
            result["last_active_ago"] = max(0, self._now_ms() - state.last_active_ms)
        if state.status_msg is not None:
            result["status_msg"] = state.status_msg
        return result

    def changed_users(self, position: int) -> set[str]:
        """The users whose presence changed after `position` (every known one for a
        position beyond the stream's end: see changes_since)."""
        if position > self.current:
            position = 0
        return {user_id for user_id, state in self._users.items() if state.position > position}

    def changes_since(self, position: int, users: set[str]) -> list[JsonDict]:
        """m.presence events for those of `users` whose presence changed after `position`.

        A position beyond the stream's end comes from a token of an earlier
        run of the process (presence is not persisted): then every known
        presence is sent again, rather than nothing until the stream catches up.
        """
        if position > self.current:
            position = 0
        changed = [
            (state.position, user_id)
            for user_id in users
            if (state := self._users.get(user_id)) is not None and state.position > position
        ]
        return [
            {"type": "m.presence", "sender": user_id, "content": self.get(user_id)}
            for _, user_id in sorted(changed)
        ]

    # -- internals ---------------------------------------------------------------

    def _user(self, user_id: str) -> _UserPresence:
        state = self._users.get(user_id)
        if state is None:
            state = self._users[user_id] = _UserPresence()
        return state

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def replicate(self, bus: ReplicationBus) -> None:
        """Share presence with the other processes (issue 17). The process that saw the
        user's activity owns their timers and sends each change; the others record it
        at a position of their own presence stream (presence positions are per process)."""
        self._bus = bus
        bus.subscribe("presence", self._replicated)

    def _replicated(self, sender: str, message: dict[str, Any]) -> None:
        user_id, presence = message["u"], message["p"]
        if presence not in STATES:
            return
        state = self._user(user_id)
        state.last_active_ms = message.get("a")
        if (presence, message.get("m")) != (state.presence, state.status_msg):
            self._change(user_id, state, presence, message.get("m"), publish=False)

    def _change(self, user_id: str, state: _UserPresence, presence: str,
                status_msg: str | None, publish: bool = True) -> None:
        """Record a visible change at a new stream position and wake whoever waits."""
        state.presence, state.status_msg = presence, status_msg
        if publish and self._bus is not None:
            self._bus.publish("presence", {"u": user_id, "p": presence, "m": status_msg,
                                           "a": state.last_active_ms})
        positions = self._stream.allocate(1)
        state.position = positions[0]
        self._stream.finish(positions, users=[user_id])  # announced by the stream

    def _restart_idle_timer(self, user_id: str, state: _UserPresence) -> None:
        """Idle `idle_timeout_s` from now. Every /sync and socket message restarts this,
        so the timer is not moved (a cancel and a new reactor call each time, measured in
        bench/sync_fanout.py): the deadline is, and a timer firing before it re-arms."""
        state.idle_at = self._clock.seconds() + self._idle_timeout
        if not self._stopped and not _pending(state.idle_call):
            state.idle_call = self._clock.callLater(self._idle_timeout, self._went_idle, user_id)

    def _restart_offline_timer(self, user_id: str, state: _UserPresence) -> None:
        """Offline `offline_timeout_s` from now unless a connection is open then (as
        _restart_idle_timer: the deadline moves, the timer re-arms when it fires early)."""
        state.offline_at = self._clock.seconds() + self._offline_timeout
        if not self._stopped and not _pending(state.offline_call):
            state.offline_call = self._clock.callLater(self._offline_timeout, self._went_away,
                                                       user_id)

    def _went_idle(self, user_id: str) -> None:
        state = self._users[user_id]
        state.idle_call = None
        remaining = state.idle_at - self._clock.seconds()
        if remaining > 0 and not self._stopped:
            state.idle_call = self._clock.callLater(remaining, self._went_idle, user_id)
        elif state.presence == "online":
            self._change(user_id, state, "unavailable", state.status_msg)

    def _went_away(self, user_id: str) -> None:
        state = self._users[user_id]
        state.offline_call = None
        if state.connections > 0 or state.presence == "offline":
            return  # connection_closed starts the timer again after the last one ends
        remaining = state.offline_at - self._clock.seconds()
        if remaining > 0 and not self._stopped:
            state.offline_call = self._clock.callLater(remaining, self._went_away, user_id)
            return
        self._cancel_timers(state)
        self._change(user_id, state, "offline", state.status_msg)

    @staticmethod
    def _cancel_timers(state: _UserPresence) -> None:
        _cancel(state.idle_call)
        _cancel(state.offline_call)
        state.idle_call = state.offline_call = None


def _pending(call: IDelayedCall | None) -> bool:
    return call is not None and call.active()


def _cancel(call: IDelayedCall | None) -> None:
    if call is not None and call.active():
        call.cancel()


def _status_msg(body: dict[str, Any]) -> str | None:
    value = body.get("status_msg")
    if value is not None and not isinstance(value, str):
        raise invalid_param("status_msg must be a string")
    return value


def register(router: Router, tracker: PresenceTracker, users: UserStore,
             shares_room: SharesRoom | None = None) -> None:
    async def get_status(req: ApiRequest) -> JsonDict:
        """A user's own presence, or that of someone they share a room with (spec: 403
        for anyone else)."""
        user_id = req.params["user_id"]
        record = await users.get_user(user_id)
        if record is None or record.deactivated:
            raise not_found("No presence for this user")
        if user_id != req.user.user_id and (
                shares_room is None or not await shares_room(req.user.user_id, user_id)):
            raise forbidden("You are not allowed to see this user's presence")
        return tracker.get(user_id)

    async def put_status(req: ApiRequest) -> JsonDict:
        if req.params["user_id"] != req.user.user_id:
            raise forbidden("You may only set your own presence")
        body = req.json()
        presence = body.get("presence")
        if presence is None:
            raise missing_param("presence")
        if not isinstance(presence, str):
            raise invalid_param("presence must be a string")
        await tracker.set_presence(req.user.user_id, presence, _status_msg(body))
        return {}

    path = f"{CLIENT_PREFIX}/presence/{{user_id}}/status"
    router.add("GET", path, get_status)
    router.add("PUT", path, put_status)
