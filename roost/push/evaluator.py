"""Evaluation of every new event for every local member, off the events stream.

Like the federation sender, it pulls: on each `events` notification it reads
the events after its persisted position (local sends this process has just
persisted come from the engine's memory, `RoomEngine.recent_local_events`), evaluates each for the room's local
joined members (and a local invitee), and in one transaction stores the
notifying outcomes (`push_actions`), the senders' own read positions (sending
an event reads the room up to it) and its new position. Nothing runs in the
append path; a restart resumes where the stored position says.

The spec wants a new event's notification count in the same /sync response as
the event: `reached(position)` lets /sync wait, briefly, until evaluation has
caught up with the events it is about to serve.

Per event the work is: parse and flatten it once, take the room's members,
display names and power levels from a per-room cache (rebuilt when a state
event of the room passes), take each member's compiled rules from a per-user
cache (users who kept the defaults share one compiled object), evaluate.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from roost.push.counts import UnreadCache
from roost.push.evaluate import (
    CompiledRules,
    FlatEvent,
    Group,
    RoomContext,
    compile_rules,
    evaluate_groups,
    group_users,
    related_event,
    thread_of,
)
from roost.push.rules import RuleSet, ruleset_from_stored
from roost.push.waiters import PositionWaiters
from roost.rooms.auth import get_power_level
from roost.rooms.engine import RoomEngine
from roost.storage.notifier import Notifier, StreamChange
from roost.storage.push import ActionRow, EventRow, PushActionStore, PushRuleStore
from roost.storage.streams import StreamIdGenerator

logger = logging.getLogger(__name__)

READ_BATCH = 500
RULES_CACHE_SIZE = 50_000
ROOMS_CACHE_SIZE = 2_000
THREADS_CACHE_SIZE = 20_000
MAIN = "main"


@dataclass
class RoomInfo:
    """A room's local joined members with their display names, its member count, what
    deciding a sender's notification power needs, and (once asked) its members grouped by
    compiled rules, kept while no one's rules change (`generation`)."""

    local_members: dict[str, str | None]
    member_count: int
    state: dict[Any, Any]
    version: Any
    groups: list[Group] | None = None
    generation: int = -1
    contexts: dict[str, RoomContext] = field(default_factory=dict)

    def context(self, sender: str) -> RoomContext:
        found = self.contexts.get(sender)
        if found is None:
            levels_event = self.state.get(("m.room.power_levels", ""))
            levels = levels_event.content if levels_event is not None else {}
            notifications = levels.get("notifications")
            found = self.contexts[sender] = RoomContext(
                self.member_count, get_power_level(sender, self.state, self.version),
                notifications if isinstance(notifications, dict) else {})
        return found


# (stream position, the event as rules read it, origin_server_ts)
Parsed = tuple[int, dict[str, Any], int]


def _parse(rows: list[EventRow]) -> list[Parsed]:
    parsed = []
    for position, event_id, room_id, event_type, sender, state_key, content, ts in rows:
        event = {"event_id": event_id, "room_id": room_id, "type": event_type,
                 "sender": sender, "content": json.loads(content) if content else {}}
        if state_key is not None:
            event["state_key"] = state_key
        parsed.append((position, event, ts))
    return parsed


class PushEvaluator:
    def __init__(self, actions: PushActionStore, rules: PushRuleStore, engine: RoomEngine,
                 events_stream: StreamIdGenerator, notifier: Notifier, server_name: str,
                 clock: IReactorTime) -> None:
        self._actions = actions
        self._rule_store = rules
        self._engine = engine
        self._stream = events_stream
        self._notifier = notifier
        self._suffix = ":" + server_name
        self.position = 0
        self._reading = False
        self._read_again = False
        self._stopped = False
        self._remove_listener: Callable[[], None] | None = None
        self._task: defer.Deferred[None] | None = None
        self._defaults = compile_rules(RuleSet())
        self._rules: OrderedDict[str, CompiledRules] = OrderedDict()
        self._rooms: OrderedDict[str, RoomInfo] = OrderedDict()
        self._threads: OrderedDict[str, str] = OrderedDict()
        self._waiters = PositionWaiters(clock)  # readers waiting for evaluation (reached)
        self._generation = 0  # moves whenever someone's rules change
        self.counts = UnreadCache()
        # Called with (the batch's stored rows, new position) after each batch.
        self.on_actions: list[Callable[[list[ActionRow], int], None]] = []

    # -- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        """Load the position (first start: now; history is not evaluated) and catch up."""
        position = await self._actions.get_position()
        if position is None:
            position = self._stream.current
            await self._actions.record([], [], position)
        self.position = position
        self._remove_listener = self._notifier.add_listener(self._on_change)
        self._read()

    async def stop(self) -> None:
        self._stopped = True
        if self._remove_listener is not None:
            self._remove_listener()
        if self._task is not None:
            self._task.cancel()
        self._waiters.release_all()

    def rules_changed(self, user_id: str) -> None:
        """The user's rules changed here: compile them again when next needed."""
        self._rules.pop(user_id, None)
        self._generation += 1

    def evaluated_elsewhere(self) -> None:
        """Evaluation runs in another process (homeserver/roles.py): never wait for this
        one, and keep no counts here, since its batches are not seen here."""
        self._stopped = True
        self.counts = UnreadCache(max_entries=0)

    def reached(self, position: int, timeout_s: float) -> defer.Deferred[None]:
        """Fires once evaluation has passed `position`, or after `timeout_s` regardless (a
        reader never hangs on a failing evaluator)."""
        if self.position >= position or self._stopped:
            return defer.succeed(None)
        return self._waiters.wait(position, timeout_s)

    def has_reached(self, position: int) -> bool:
        """Whether `reached(position, ...)` would fire at once."""
        return self.position >= position or self._stopped

    # -- reading the events stream ------------------------------------------------

    def _on_change(self, change: StreamChange) -> None:
        if change.stream == "events" and not self._stopped:
            self._read()
        elif change.stream == "receipts":
            # A receipt moved these users' read positions in these rooms.
            self.counts.drop((u, r) for u in change.users for r in change.rooms)

    def _read(self) -> None:
        if self._reading:
            self._read_again = True
            return
        self._reading = True
        self._task = defer.ensureDeferred(self._read_loop())

    async def _read_loop(self) -> None:
        # The next batch when it is known before its turn: (up to where, its events).
        ahead: tuple[int, list[Parsed]] | None = None
        try:
            while not self._stopped:
                self._read_again = False
                if ahead is not None:
                    (upto, parsed), ahead = ahead, None
                else:
                    upto = self._stream.current
                    if upto <= self.position:
                        if not self._read_again:
                            return
                        continue
                    upto, parsed = await self._events(self.position, upto)
                actions, own_reads = await self._evaluate(parsed)
                next_upto = self._stream.current
                # Local sends just persisted here come from the engine's memory; otherwise
                # the write reads the events that arrived meanwhile in its own transaction
                # (a batch then costs one round trip, not a read and a write).
                local = self._local_events(upto, next_upto)
                self.counts.writing()
                try:
                    rows = await self._actions.record(
                        actions, own_reads, upto, next_upto if local is None else None,
                        READ_BATCH)
                except BaseException:
                    self.counts.clear()  # committed or not, nobody knows: read them again
                    raise
                if local is not None:
                    ahead = (next_upto, local)
                elif next_upto > upto:
                    ahead = (rows[-1][0] if len(rows) == READ_BATCH else next_upto,
                             _parse(rows))
                self.counts.add(actions, [(u, r) for u, r, _, _ in own_reads], upto)
                self.position = upto
                self._waiters.release(upto)
                for listener in self.on_actions:
                    listener(actions, upto)
        except defer.CancelledError:
            pass
        except Exception:
            logger.exception("push evaluation failed; retrying on the next event")
        finally:
            self._reading = False

    async def _events(self, after: int, upto: int) -> tuple[int, list[Parsed]]:
        """The events of (after, upto] to evaluate, and where they end (sooner than `upto`
        when there are more than a batch)."""
        local = self._local_events(after, upto)
        if local is not None:
            return upto, local
        rows = await self._actions.events_after(after, upto, READ_BATCH)
        return (rows[-1][0] if len(rows) == READ_BATCH else upto), _parse(rows)

    def _local_events(self, after: int, upto: int) -> list[Parsed] | None:
        if upto <= after:
            return None
        found = self._engine.recent_local_events(after, upto)
        if found is None:
            return None
        parsed = []
        for position, e, _ in found:
            event = {"event_id": e.event_id, "room_id": e.room_id, "type": e.type,
                     "sender": e.sender, "content": e.content}
            if e.state_key is not None:
                event["state_key"] = e.state_key
            parsed.append((position, event, e.origin_server_ts))
        return parsed

    # -- evaluation -----------------------------------------------------------------

    async def _evaluate(self, parsed: list[Parsed]
                        ) -> tuple[list[ActionRow], list[tuple[str, str, str, int]]]:
        threads = await self._threads_of(parsed)
        actions: list[ActionRow] = []
        own_reads: dict[tuple[str, str, str], int] = {}
        for position, event, ts in parsed:
            room_id, sender, event_id = event["room_id"], event.get("sender", ""), event["event_id"]
            thread = threads.get(event_id, MAIN)
            if sender.endswith(self._suffix):
                own_reads[(sender, room_id, thread)] = position
            if event.get("state_key") is not None:
                self._rooms.pop(room_id, None)  # its members or power levels may have changed
            room = await self._room(room_id)
            content = event.get("content")
            if room is None or not isinstance(content, dict):
                continue
            groups = await self._groups(room)
            if event.get("type") == "m.room.member" and content.get("membership") == "invite":
                invitee = event.get("state_key")
                if isinstance(invitee, str) and invitee.endswith(self._suffix) \
                        and invitee not in room.local_members:
                    invitee_rules = (await self._rules_for([invitee]))[invitee]
                    groups = [*groups, (invitee_rules, [invitee])]
            if not groups:
                continue
            n = 0
            for found, users in evaluate_groups(FlatEvent(event), room.context(sender), groups,
                                                room.local_members):
                if found.notify:
                    actions.append((position, n, room_id, event_id, thread, found.actions_json,
                                    found.highlight, ts, users))
                    n += 1
        return actions, [(u, r, t, p) for (u, r, t), p in own_reads.items()]

    async def _threads_of(self, parsed: list[tuple[int, dict[str, Any], int]]) -> dict[str, str]:
        """event -> thread root for the batch's events in a thread: named directly, or through
        the event they relate to (a reaction or edit of a thread event), one hop."""
        found: dict[str, str] = {}
        unknown: dict[str, str] = {}
        for _, event, _ in parsed:
            content = event.get("content")
            if not isinstance(content, dict):
                continue
            root = thread_of(content)
            target = related_event(content)
            if root is None and target is not None:
                root = found.get(target) or self._threads.get(target)
                if root is None:
                    unknown[event["event_id"]] = target
            if root is not None:
                found[event["event_id"]] = root
        if unknown:
            roots = await self._actions.thread_of_events(sorted(set(unknown.values())))
            found.update({e: roots[t] for e, t in unknown.items() if t in roots})
        for event_id, root in found.items():
            self._threads[event_id] = root
        while len(self._threads) > THREADS_CACHE_SIZE:
            self._threads.popitem(last=False)
        return found

    async def _room(self, room_id: str) -> RoomInfo | None:
        info = self._rooms.get(room_id)
        if info is not None:
            self._rooms.move_to_end(room_id)
            return info
        version = await self._engine.room_version(room_id)
        if version is None:
            return None
        state = await self._engine.current_state_events(room_id)
        members: dict[str, str | None] = {}
        count = 0
        for (event_type, state_key), event in state.items():
            if event_type != "m.room.member" or event.content.get("membership") != "join":
                continue
            count += 1
            if state_key.endswith(self._suffix):
                name = event.content.get("displayname")
                members[state_key] = name if isinstance(name, str) else None
        info = RoomInfo(members, count, state, version)
        self._rooms[room_id] = info
        while len(self._rooms) > ROOMS_CACHE_SIZE:
            self._rooms.popitem(last=False)
        return info

    async def _groups(self, room: RoomInfo) -> list[Group]:
        if room.groups is None or room.generation != self._generation:
            generation = self._generation
            room.groups = group_users(await self._rules_for(list(room.local_members)))
            room.generation = generation
        return room.groups

    async def _rules_for(self, user_ids: list[str]) -> dict[str, CompiledRules]:
        cache = self._rules
        missing = [u for u in user_ids if u not in cache]
        if missing:
            stored = await self._rule_store.rules_for_users(missing)
            for user_id in missing:
                if user_id in stored:
                    cache[user_id] = compile_rules(ruleset_from_stored(*stored[user_id]))
                else:
                    cache[user_id] = self._defaults
            while len(cache) > RULES_CACHE_SIZE:
                cache.popitem(last=False)
        return {u: cache[u] for u in user_ids}

