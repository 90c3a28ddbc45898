"""Delivery of notifications to push gateways (the Push Gateway API), off the evaluator.

Each pusher has a stored position: the last notification (a `push_actions`
row, by stream ordering) it delivered. When evaluation stores notifying
actions for a user, each of that user's pushers reads its rows after its
position and POSTs them, one at a time and in order, to
`/_matrix/push/v1/notify`; the position moves after each 200. A failure
(connection refused, timeout, another status) is retried after a delay that
starts at the configured minimum and doubles up to the maximum; after
`MAX_ATTEMPTS` failures that notification is skipped, so that one bad event
cannot hold back the rest forever. A pushkey the gateway lists in `rejected`
removes every pusher with that app id and pushkey, as the spec says.

A new pusher starts at the evaluator's position: it is sent what happens from
then on, not history.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web.client import HTTPConnectionPool

from roost.push.evaluator import PushEvaluator
from roost.rooms.engine import RoomEngine
from roost.storage.push import PushActionStore, Pusher, PusherStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
NOTIFY_PATH = "/_matrix/push/v1/notify"
MAX_ATTEMPTS = 10
BATCH = 50
REQUEST_TIMEOUT_S = 30.0

# (user, room, event id) -> what a full-format notification says of the event (None: gone).
EventDetails = Callable[[str, str, str], Awaitable[JsonDict | None]]


@dataclass
class _State:
    pusher: Pusher
    position: int
    running: bool = False
    again: bool = False
    failures: int = 0
    retry_ms: int = 0
    timer: IDelayedCall | None = None
    removed: bool = False


@dataclass
class DeliveryStats:
    sent: int = 0
    failures: int = 0
    skipped: int = 0


def pusher_key(pusher: Pusher) -> tuple[str, str, str]:
    return (pusher.user_id, pusher.app_id, pusher.pushkey)


def tweaks_of(actions: list[Any]) -> JsonDict:
    tweaks: JsonDict = {}
    for action in actions:
        if isinstance(action, dict) and isinstance(action.get("set_tweak"), str):
            tweaks[action["set_tweak"]] = action.get(
                "value", True if action["set_tweak"] == "highlight" else None)
    return {k: v for k, v in tweaks.items() if v is not None}


class PusherDelivery:
    def __init__(self, store: PusherStore, actions: PushActionStore, evaluator: PushEvaluator,
                 event_details: EventDetails, reactor: Any, clock: IReactorTime, *,
                 min_retry_interval_ms: int, max_retry_interval_ms: int,
                 agent: Any = None, pool: HTTPConnectionPool | None = None) -> None:
        """`agent` is what connects to gateways: wiring gives one that refuses the
        configured IP ranges (a pusher's URL is the client's choice)."""
        self._store = store
        self._actions = actions
        self._evaluator = evaluator
        self._details = event_details
        self._reactor = reactor
        self._clock = clock
        self._min_retry = max(1, min_retry_interval_ms)
        self._max_retry = max(self._min_retry, max_retry_interval_ms)
        self._pool = pool or HTTPConnectionPool(reactor, persistent=True)
        self._agent = agent
        self._pushers: dict[tuple[str, str, str], _State] = {}
        self._by_user: dict[str, set[tuple[str, str, str]]] = {}
        self._tasks: set[defer.Deferred[None]] = set()
        self._stopped = False
        self.stats = DeliveryStats()

    async def start(self) -> None:
        """Load every pusher and send what each is owed (a restart resumes where it was)."""
        for pusher in await self._store.all():
            self._add(pusher)
        self._evaluator.on_actions.append(self._on_actions)
        for state in list(self._pushers.values()):
            self._wake(state)

    async def stop(self) -> None:
        self._stopped = True
        if self._on_actions in self._evaluator.on_actions:
            self._evaluator.on_actions.remove(self._on_actions)
        for state in self._pushers.values():
            if state.timer is not None and state.timer.active():
                state.timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self._pool.closeCachedConnections()

    # -- the set of pushers ---------------------------------------------------------

    def added(self, pusher: Pusher) -> None:
        """A pusher was stored (new or updated) through the client API."""
        state = self._pushers.get(pusher_key(pusher))
        if state is not None:
            state.pusher = pusher
            return
        self._add(pusher)

    def removed(self, user_id: str, app_id: str, pushkey: str) -> None:
        state = self._pushers.pop((user_id, app_id, pushkey), None)
        if state is None:
            return
        state.removed = True
        if state.timer is not None and state.timer.active():
            state.timer.cancel()
        keys = self._by_user.get(user_id)
        if keys is not None:
            keys.discard((user_id, app_id, pushkey))
            if not keys:
                del self._by_user[user_id]

    def _add(self, pusher: Pusher) -> None:
        key = pusher_key(pusher)
        self._pushers[key] = _State(pusher, pusher.last_stream_ordering)
        self._by_user.setdefault(pusher.user_id, set()).add(key)

    # -- waking -------------------------------------------------------------------------

    def _on_actions(self, rows: list[Any], position: int) -> None:
        if self._stopped or not self._by_user:
            return
        users: set[str] = set()
        for row in rows:
            users.update(row[8])
        for user_id in users & self._by_user.keys():
            for key in list(self._by_user.get(user_id, ())):
                self._wake(self._pushers[key])

    def _wake(self, state: _State) -> None:
        if state.removed or self._stopped:
            return
        if state.timer is not None and state.timer.active():
            return  # backing off: the timer runs it
        if state.running:
            state.again = True
            return
        state.running = True
        task = defer.ensureDeferred(self._run(state))
        self._tasks.add(task)
        task.addBoth(lambda _: self._tasks.discard(task))

    def _retry_later(self, state: _State) -> None:
        if self._stopped or state.removed:
            return
        state.retry_ms = min(self._max_retry, state.retry_ms * 2 if state.retry_ms
                             else self._min_retry)

        def fire() -> None:
            state.timer = None
            self._wake(state)

        state.timer = self._clock.callLater(state.retry_ms / 1000, fire)

    # -- delivery -------------------------------------------------------------------------

    async def _run(self, state: _State) -> None:
        try:
            while not state.removed and not self._stopped:
                state.again = False
                pusher = state.pusher
                pending = await self._actions.pending_for(
                    pusher.user_id, state.position, self._evaluator.position, BATCH)
                if not pending:
                    if state.again:
                        continue
                    return
                for position, room_id, event_id, actions in pending:
                    outcome = await self._deliver(state, room_id, event_id, actions)
                    if outcome == "removed":
                        return
                    if outcome == "failed":
                        state.failures += 1
                        self.stats.failures += 1
                        if state.failures < MAX_ATTEMPTS:
                            self._retry_later(state)
                            return
                        logger.warning("pusher %s/%s: giving up on %s after %d attempts",
                                       pusher.user_id, pusher.app_id, event_id, state.failures)
                        self.stats.skipped += 1
                    else:
                        self.stats.sent += 1
                    state.failures, state.retry_ms = 0, 0
                    state.position = position
                    await self._store.set_position(pusher.user_id, pusher.app_id,
                                                   pusher.pushkey, position)
        except defer.CancelledError:
            pass
        except Exception:
            logger.exception("pusher delivery failed")
            self._retry_later(state)
        finally:
            state.running = False

    async def _deliver(self, state: _State, room_id: str, event_id: str,
                       actions: list[Any]) -> str:
        pusher = state.pusher
        url = pusher.data.get("url")
        if not isinstance(url, str):
            return "sent"  # nothing to send to; such a pusher is refused when set
        body = await self._body(pusher, room_id, event_id, actions)
        import treq  # here, not at start: treq (1.7 MiB) only for servers that use it

        try:
            response = await treq.post(url, json.dumps(body).encode(),
                                       headers={"Content-Type": "application/json"},
                                       pool=self._pool, reactor=self._reactor,
                                       agent=self._agent, timeout=REQUEST_TIMEOUT_S)
            content = await response.content()
        except Exception as e:
            logger.info("push gateway %s unreachable: %s", url, e)
            return "failed"
        if response.code != 200:
            logger.info("push gateway %s answered %d", url, response.code)
            return "failed"
        try:
            rejected = json.loads(content).get("rejected", [])
        except (ValueError, AttributeError):
            rejected = []
        if isinstance(rejected, list) and pusher.pushkey in rejected:
            users = await self._store.remove_by_key(pusher.app_id, pusher.pushkey)
            for user_id in users:
                self.removed(user_id, pusher.app_id, pusher.pushkey)
            self.removed(pusher.user_id, pusher.app_id, pusher.pushkey)
            logger.info("push gateway rejected pushkey of %s/%s: pusher removed",
                        pusher.user_id, pusher.app_id)
            return "removed"
        return "sent"

    async def _body(self, pusher: Pusher, room_id: str, event_id: str,
                    actions: list[Any]) -> JsonDict:
        tweaks = tweaks_of(actions)
        device = {"app_id": pusher.app_id, "pushkey": pusher.pushkey,
                  "pushkey_ts": pusher.created_ts // 1000,
                  "data": {k: v for k, v in pusher.data.items() if k != "url"},
                  "tweaks": tweaks}
        unread = await self._actions.total_unread(pusher.user_id)
        notification: JsonDict = {
            "event_id": event_id, "room_id": room_id, "counts": {"unread": unread},
            "prio": "high" if tweaks.get("highlight") or "sound" in tweaks else "low",
            "devices": [device]}
        if pusher.data.get("format") != "event_id_only":
            details = await self._details(pusher.user_id, room_id, event_id)
            if details is not None:
                notification.update(details)
        return {"notification": notification}


def event_details(engine: RoomEngine) -> EventDetails:
    """The full format's event fields: type, sender and their display name, content, the
    room's name and alias, and whether the pusher's user is the target of a member event."""

    async def details(user_id: str, room_id: str, event_id: str) -> JsonDict | None:
        loaded = (await engine.get_events([event_id])).get(event_id)
        if loaded is None:
            return None
        event = loaded.event
        state = await engine.current_state_events(room_id)
        out: JsonDict = {"type": event.type, "sender": event.sender}
        if loaded.redacted_by is None:
            out["content"] = event.content
        member = state.get(("m.room.member", event.sender))
        name = member.content.get("displayname") if member is not None else None
        if isinstance(name, str):
            out["sender_display_name"] = name
        room_name = state.get(("m.room.name", ""))
        if room_name is not None and isinstance(room_name.content.get("name"), str):
            out["room_name"] = room_name.content["name"]
        alias = state.get(("m.room.canonical_alias", ""))
        if alias is not None and isinstance(alias.content.get("alias"), str):
            out["room_alias"] = alias.content["alias"]
        if event.type == "m.room.member":
            out["user_is_target"] = event.state_key == user_id
        return out

    return details
