"""PUT /rooms/{roomId}/typing/{userId}, and the typing state that expires by itself.

Typing is ephemeral: it lives in memory, each change gets a position in the
typing stream, and a typing notice ends on its own when its timeout passes
(timed with the injected clock, so tests advance a fake one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from roost.client_api.errors import bad_json, forbidden
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.room_view import RoomView
from roost.storage.notifier import Notifier

if TYPE_CHECKING:  # txredisapi is imported only when Redis is on
    from roost.storage.replication import ReplicationBus

MAX_TIMEOUT_MS = 120_000
DEFAULT_TIMEOUT_MS = 30_000


class TypingTracker:
    def __init__(self, clock: Any, notifier: Notifier) -> None:
        self._clock = clock
        self._notifier = notifier
        self.position = 0
        self._typing: dict[str, dict[str, Any]] = {}  # room -> user -> expiry timer
        self._changed_at: dict[str, int] = {}  # room -> position of its last change
        self._stopped = False
        self._bus: ReplicationBus | None = None

    def replicate(self, bus: ReplicationBus) -> None:
        """Share typing with the other processes (issue 17): each keeps the same state,
        and each expires a notice on its own timer, so an expiry needs no message."""
        self._bus = bus
        bus.subscribe("typing", self._replicated)

    def set_typing(self, room_id: str, user_id: str, timeout_ms: int) -> None:
        self._set(room_id, user_id, timeout_ms)
        if self._bus is not None:
            self._bus.publish("typing", {"r": room_id, "u": user_id, "t": timeout_ms})

    def stop_typing(self, room_id: str, user_id: str) -> None:
        self._stop(room_id, user_id)
        if self._bus is not None:
            self._bus.publish("typing", {"r": room_id, "u": user_id})

    def _replicated(self, sender: str, message: dict[str, Any]) -> None:
        room_id, user_id, timeout_ms = message["r"], message["u"], message.get("t")
        if timeout_ms is None:
            self._stop(room_id, user_id)
        else:
            self._set(room_id, user_id, min(int(timeout_ms), MAX_TIMEOUT_MS))

    def _set(self, room_id: str, user_id: str, timeout_ms: int) -> None:
        if self._stopped:
            return  # shutting down: a late request or remote EDU starts no timer
        users = self._typing.setdefault(room_id, {})
        timer = users.pop(user_id, None)
        if timer is not None and timer.active():
            timer.cancel()
        users[user_id] = self._clock.callLater(timeout_ms / 1000, self._stop, room_id, user_id)
        self._changed(room_id)

    def _stop(self, room_id: str, user_id: str) -> None:
        users = self._typing.get(room_id, {})
        timer = users.pop(user_id, None)
        if timer is None:
            return
        if timer.active():
            timer.cancel()
        if not users:
            self._typing.pop(room_id, None)
        self._changed(room_id)

    def _changed(self, room_id: str) -> None:
        self.position += 1
        self._changed_at[room_id] = self.position
        self._notifier.notify("typing", self.position, rooms=[room_id])

    def stop(self) -> None:
        """Cancel every pending expiry: typing state does not outlive the server."""
        self._stopped = True
        for users in self._typing.values():
            for timer in users.values():
                if timer.active():
                    timer.cancel()
        self._typing.clear()

    def typing_users(self, room_id: str) -> list[str]:
        return sorted(self._typing.get(room_id, {}))

    def changed_since(self, room_id: str, position: int) -> bool:
        return self._changed_at.get(room_id, 0) > position

    def event(self, room_id: str) -> JsonDict:
        return {"type": "m.typing", "content": {"user_ids": self.typing_users(room_id)}}


def register(router: Router, typing: TypingTracker, view: RoomView) -> None:
    async def put_typing(req: ApiRequest) -> JsonDict:
        room_id, user_id = req.params["room_id"], req.params["user_id"]
        if user_id != req.user.user_id:
            raise forbidden("You may only set your own typing state")
        body = req.json()
        state = body.get("typing")
        if not isinstance(state, bool):
            raise bad_json("typing must be true or false")
        await view.require_joined(room_id, user_id)
        if state:
            timeout = body.get("timeout", DEFAULT_TIMEOUT_MS)
            if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
                raise bad_json("timeout must be a number of milliseconds")
            typing.set_typing(room_id, user_id, min(timeout, MAX_TIMEOUT_MS))
        else:
            typing.stop_typing(room_id, user_id)
        return {}

    router.add("PUT", f"{CLIENT_PREFIX}/rooms/{{room_id}}/typing/{{user_id}}", put_typing)
