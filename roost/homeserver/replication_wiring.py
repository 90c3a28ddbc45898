"""The wiring of the replication bus and the shared streams (issue 17), by layout.

One process (no `workers` section) gets what it always had: streams counted
in memory (storage/streams.py) and no bus; nothing here imports txredisapi.
Several processes share each stream through storage/shared_streams.py: the
events stream is written by the configured event writers, the other synced
streams (receipts, account data, to-device, device lists) by any instance,
since any client process may take those writes (and a command run beside
them). Typing, presence and push
rule changes travel on the bus; each process keeps its own copy.
"""

from __future__ import annotations

import logging
from typing import Any

from roost.homeserver.config import TOOL, RoostConfig
from roost.homeserver.roles import Roles
from roost.rooms.engine import IdAllocator
from roost.storage.database import Database
from roost.storage.streams import StreamIdGenerator

logger = logging.getLogger(__name__)

# How long a starting process waits for Redis before it serves without it (and goes
# on connecting in the background).
REDIS_START_WAIT_S = 3.0


class StreamWiring:
    """Makes each stream for this process's layout, and starts the bus once all exist."""

    def __init__(self, config: RoostConfig, roles: Roles, db: Database, reactor: Any) -> None:
        """`reactor`: the real one, not a test's fake clock: positions move with Redis
        and PostgreSQL, which keep real time (and txredisapi needs the global reactor)."""
        self._config = config
        self._roles = roles
        self._db = db
        self._clock = reactor
        self.replication: Any = None  # storage.shared_streams.Replication when shared
        self._publisher: Any = None

    @property
    def shared(self) -> bool:
        return self.replication is not None

    async def open(self, closers: list[tuple[str, Any]]) -> None:
        """Connect the bus when there are several processes (Redis may come later)."""
        if self._roles.single_process:
            return
        from roost.storage.shared_streams import Replication

        redis = self._config.redis
        if not redis.enabled:  # exact still, but readers learn of writes by polling (1 s)
            logger.warning("several processes without Redis: wake-ups poll stored positions")
            self.replication = Replication(None, self._db, self._clock,
                                           instance=self._roles.instance)
            return
        from roost.storage.redis import connect_redis
        from roost.storage.replication import ReplicationBus

        # One connection: this process's messages arrive in the order it sent them
        # (a push rule change before the account data that follows it, ...).
        self._publisher = await connect_redis(None, redis.host, redis.port, redis.db,
                                              redis.password, poolsize=1, max_delay=2,
                                              connect_timeout=REDIS_START_WAIT_S,
                                              required=False)
        closers.append(("replication publisher", self._publisher.close))
        # The database's name in the channel: deployments (or tests) sharing a Redis
        # and a key prefix by mistake still never hear each other's positions.
        channel = f"{redis.key_prefix}replication:{await self._db.current_database()}"
        bus = ReplicationBus(self._publisher, redis.host, redis.port, redis.password,
                             channel, self._roles.instance)
        self.replication = Replication(bus, self._db, self._clock, on_retired=_stop_process)

    @property
    def bus(self) -> Any:
        return None if self.replication is None else self.replication.bus

    async def stream(self, name: str, table_max: int) -> Any:
        """The stream `name` (StreamIdGenerator's interface either way)."""
        if self.replication is None:
            return StreamIdGenerator(table_max)
        # A command beside the instances (`roost user deactivate`, ...) writes device
        # lists and account data too; the others pass it once it has exited.
        writers = (self._roles.event_writers if name == "events"
                   else [*self._config.workers.instances, TOOL])
        return await self.replication.stream(name, table_max, writers)

    def state_groups(self, table_max: int) -> Any:
        """State group ids: counted in memory, interleaved among several event writers."""
        if self.replication is None:
            return IdAllocator(table_max)
        return self.replication.state_group_ids(table_max, self._roles.event_writers)

    def share(self, *trackers: Any) -> None:
        """Typing and presence trackers follow the other processes' changes."""
        if self.bus is not None:
            for tracker in trackers:
                tracker.replicate(self.bus)

    def push_rule_changes(self, evaluator: Any) -> Any:
        """What PushRules tells of a user's changed rules: the evaluator here, and over
        the bus the evaluator of the pusher process."""
        if self.bus is None:
            return evaluator
        return _SharedRuleChanges(evaluator, self.bus)

    def unread_counts(self, evaluator: Any, notifier: Any, runs_pusher: bool) -> Any:
        """What /sync reads unread counts from (push/shared_counts.py): the evaluator here;
        among several processes on a bus, the pusher's evaluator publishes its batches and
        the other processes follow them, instead of reading PostgreSQL on every answer."""
        bus = self.bus
        if bus is None:
            return evaluator
        from roost.push.shared_counts import KIND, FollowedCounts, PublishingCache

        if runs_pusher:
            evaluator.counts = PublishingCache(bus.publish, lambda: evaluator.position)
            return evaluator
        follower = FollowedCounts(self._clock, lambda: bool(bus.connected))
        bus.subscribe(KIND, follower.heard)
        bus.on_connect(follower.restart)  # messages may have been lost while Redis was away

        def on_change(change: Any) -> None:
            if change.stream == "receipts":
                follower.receipts_moved((u, r) for u in change.users for r in change.rooms)

        notifier.add_cache(on_change)
        return follower

    async def start(self, closers: list[tuple[str, Any]]) -> None:
        """Subscribe and catch up; after every stream exists and announces on the notifier."""
        if self.replication is None:
            return
        bus = self.replication.bus
        if bus is not None:
            # Redis unreachable: serve anyway, polling stored positions, and join the bus
            # when it appears (Replication's on_connect catches up and asks for claims).
            await bus.start(REDIS_START_WAIT_S, required=False)
            closers.append(("replication bus", bus.stop))
        if bus is None or not bus.connected:
            await self.replication.catch_up()
        self.replication.start()
        closers.append(("stream positions", self.replication.stop))


class _SharedRuleChanges:
    """PushRules' evaluator in a process among several: the change is told to all."""

    def __init__(self, evaluator: Any, bus: Any) -> None:
        self._evaluator = evaluator
        self._bus = bus
        bus.subscribe("push_rules", self._replicated)

    def rules_changed(self, user_id: str) -> None:
        self._evaluator.rules_changed(user_id)
        self._bus.publish("push_rules", {"u": user_id})

    def _replicated(self, sender: str, message: dict[str, Any]) -> None:
        self._evaluator.rules_changed(message["u"])


def _stop_process(stream: str) -> None:
    """The other processes took this one for dead and passed its position in `stream`
    (shared_streams.Replication.retire_stalled): it stops, to be restarted (systemd,
    or whatever runs it) above everyone, rather than write what no reader would see."""
    from twisted.internet import reactor

    logger.critical("stopping: retired from the %s stream by the other processes", stream)
    reactor.callLater(0, reactor.stop)  # type: ignore[attr-defined]
