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
from collections.abc import Callable, Mapping
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
from roost.rooms.engine import RoomEngine, StateKey
from roost.rooms.event_reader import state_events_at_group
from roost.rooms.events import Event
from roost.storage.notifier import Notifier, StreamChange
from roost.storage.push import (
    ActionRow,
    EventRow,
    OwnRead,
    PushActionStore,
    PushRuleStore,
    PushWrite,
)
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
    # The room head's own state map it was made from (RoomEngine.current_state_shared):
    # read-only, and the same object exactly while the room's state is the same.
    state: Mapping[StateKey, Event]
    version: Any
    groups: list[Group] | None = None
    # The state group `state` is (None: not known, as for the state a send was built on):
    # an event is evaluated with the room as of its own group (PushEvaluator._room_at).
    group: int | None = None
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


# (stream position, the event as rules read it, origin_server_ts, its state group: the
# state at it, which evaluation reads the room's members and power levels from)
Parsed = tuple[int, dict[str, Any], int, int | None]


def _parse(rows: list[EventRow]) -> list[Parsed]:
    parsed = []
    for position, event_id, room_id, event_type, sender, state_key, content, ts, group in rows:
        event = {"event_id": event_id, "room_id": room_id, "type": event_type,
                 "sender": sender, "content": json.loads(content) if content else {}}
        if state_key is not None:
            event["state_key"] = state_key
        parsed.append((position, event, ts, group))
    return parsed


def _parsed(events: list[tuple[int, Event, int | None]]) -> list[Parsed]:
    """Local events as evaluation reads them (what _parse makes of stored rows)."""
    parsed = []
    for position, e, group in events:
        event = {"event_id": e.event_id, "room_id": e.room_id, "type": e.type,
                 "sender": e.sender, "content": e.content}
        if e.state_key is not None:
            event["state_key"] = e.state_key
        parsed.append((position, event, e.origin_server_ts, group))
    return parsed


def _room_info(state: Mapping[StateKey, Event], version: Any, suffix: str) -> RoomInfo:
    """A room's local joined members with their display names, counted, from its state."""
    members: dict[str, str | None] = {}
    count = 0
    for (event_type, state_key), event in state.items():
        if event_type != "m.room.member" or event.content.get("membership") != "join":
            continue
        count += 1
        if state_key.endswith(suffix):
            name = event.content.get("displayname")
            members[state_key] = name if isinstance(name, str) else None
    return RoomInfo(members, count, state, version)


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
        # A batch evaluated before its persist, whose transaction stores it (prepare).
        self._stored_with: PushWrite | None = None
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
        self._engine.companion = self  # local messages' evaluation stored with them (prepare)
        self._read()

    async def stop(self) -> None:
        self._stopped = True
        if getattr(self._engine, "companion", None) is self:
            self._engine.companion = None
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
                self._batch_stored(actions, own_reads, upto)
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
        return _parsed(found)

    # -- evaluation -----------------------------------------------------------------

    async def _evaluate(self, parsed: list[Parsed]) -> tuple[list[ActionRow], list[OwnRead]]:
        threads = await self._threads_of(parsed)
        actions: list[ActionRow] = []
        own_reads: dict[tuple[str, str, str], int] = {}
        for position, event, ts, group in parsed:
            room_id = event["room_id"]
            room = await self._room_at(room_id, group, event.get("state_key") is not None)
            groups = await self._groups(room) if room is not None else []
            content = event.get("content")
            if room is not None and isinstance(content, dict) and event.get("type") == \
                    "m.room.member" and content.get("membership") == "invite":
                invitee = event.get("state_key")
                if isinstance(invitee, str) and invitee.endswith(self._suffix) \
                        and invitee not in room.local_members:
                    invitee_rules = (await self._rules_for([invitee]))[invitee]
                    groups = [*groups, (invitee_rules, [invitee])]
            self._evaluate_one(position, event, ts, threads, room, groups, actions, own_reads)
        return actions, [(u, r, t, p) for (u, r, t), p in own_reads.items()]

    def _evaluate_one(self, position: int, event: dict[str, Any], ts: int,
                      threads: dict[str, str], room: RoomInfo | None, groups: list[Group],
                      actions: list[ActionRow],
                      own_reads: dict[tuple[str, str, str], int]) -> None:
        """One event's outcomes for the room's members (`groups`), added to `actions`, and
        its sender's own read to `own_reads`."""
        room_id, sender, event_id = event["room_id"], event.get("sender", ""), event["event_id"]
        thread = threads.get(event_id, MAIN)
        if sender.endswith(self._suffix):
            own_reads[(sender, room_id, thread)] = position
        content = event.get("content")
        if room is None or not isinstance(content, dict) or not groups:
            return
        n = 0
        for found, users in evaluate_groups(FlatEvent(event), room.context(sender), groups,
                                            room.local_members):
            if found.notify:
                actions.append((position, n, room_id, event_id, thread, found.actions_json,
                                found.highlight, ts, users))
                n += 1

    # -- evaluation stored with the events (RoomEngine's PersistCompanion) ------------

    def prepare(self, room_id: str, state_events: Mapping[StateKey, Event],
                events: list[Event], positions: list[int]) -> PushWrite | None:
        """Evaluate a batch of local messages before their persist, which then stores the
        outcome and this evaluator's new position in its own transaction: one transaction
        per message instead of two, and a /sync need not wait for a second commit.

        Only when that is exactly what the read loop would store: every event before the
        batch evaluated and stored (the position is the one just before it, nothing being
        evaluated or stored meanwhile), the batch's positions consecutive (so the new
        position claims no one else's event), messages only, and everything evaluation
        needs held in memory (the room's members made from the very state the messages
        were built on, everyone's compiled rules, every related event's thread). Else
        None: the read loop evaluates them once they are readable, as before."""
        if (self._stopped or self._reading or self._stored_with is not None
                or positions[0] != self.position + 1
                or positions[-1] - positions[0] != len(positions) - 1):
            return None
        parsed = _parsed([(position, event, None) for position, event in zip(positions, events,
                                                                                strict=True)])
        room = self._room_held(room_id, state_events)
        threads = self._threads_held(parsed)
        if room is None or threads is None:
            return None
        actions: list[ActionRow] = []
        own_reads: dict[tuple[str, str, str], int] = {}
        for position, event, ts, _ in parsed:
            self._evaluate_one(position, event, ts, threads, room, room.groups or [], actions,
                               own_reads)
        self._keep_threads(threads)
        write = PushWrite(actions, [(u, r, t, p) for (u, r, t), p in own_reads.items()],
                          positions[-1])
        self.counts.writing()
        self._stored_with = write
        return write

    def committed(self, write: PushWrite) -> None:
        """The batch's persist committed its evaluation: as after the read loop's write."""
        self._stored_with = None
        self._batch_stored(write.rows, write.own_reads, write.position)

    def failed(self, write: PushWrite) -> None:
        """The persist failed, committed or not (nobody knows): the counts held are read
        again, and the read loop evaluates whatever of the batch is stored (its write
        skips outcomes already there)."""
        self._stored_with = None
        self.counts.clear()

    def _batch_stored(self, actions: list[ActionRow], own_reads: list[OwnRead],
                      upto: int) -> None:
        """A batch's outcomes committed: counts, position, waiting readers, listeners."""
        self.counts.add(actions, [(u, r) for u, r, _, _ in own_reads], upto)
        self.position = upto
        self._waiters.release(upto)
        for listener in self.on_actions:
            try:
                listener(actions, upto)
            except Exception:
                logger.exception("a listener of push actions failed")

    def _room_held(self, room_id: str, state: Mapping[StateKey, Event]) -> RoomInfo | None:
        """The room made from exactly `state` with its members grouped by current rules,
        from memory only (made again from `state` when every member's rules are held)."""
        room = self._rooms.get(room_id)
        if room is None:
            return None
        if room.state is not state:  # kept (and grouped below when every rule is held)
            room = self._rooms[room_id] = _room_info(state, room.version, self._suffix)
        if room.groups is None or room.generation != self._generation:
            if any(user not in self._rules for user in room.local_members):
                return None
            room.groups = group_users({u: self._rules[u] for u in room.local_members})
            room.generation = self._generation
        self._rooms.move_to_end(room_id)
        return room

    async def _threads_of(self, parsed: list[Parsed]) -> dict[str, str]:
        """event -> thread root for the batch's events in a thread: named directly, or through
        the event they relate to (a reaction or edit of a thread event), one hop."""
        found, unknown = self._threads_known(parsed)
        if unknown:
            roots = await self._actions.thread_of_events(sorted(set(unknown.values())))
            found.update({e: roots[t] for e, t in unknown.items() if t in roots})
        self._keep_threads(found)
        return found

    def _threads_held(self, parsed: list[Parsed]) -> dict[str, str] | None:
        """`_threads_of` from memory alone; None when an event relates to one not held."""
        found, unknown = self._threads_known(parsed)
        return None if unknown else found

    def _threads_known(self, parsed: list[Parsed]) -> tuple[dict[str, str], dict[str, str]]:
        """(event -> thread root, as far as known; event -> related event of unknown thread)."""
        found: dict[str, str] = {}
        unknown: dict[str, str] = {}
        for _, event, _, _ in parsed:
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
        return found, unknown

    def _keep_threads(self, found: dict[str, str]) -> None:
        for event_id, root in found.items():
            self._threads[event_id] = root
        while len(self._threads) > THREADS_CACHE_SIZE:
            self._threads.popitem(last=False)

    async def _room_at(self, room_id: str, group: int | None, is_state: bool) -> RoomInfo | None:
        """The room as of an event whose state group is `group`: its members and power
        levels at that event, not at whatever the room's state is by the time evaluation
        reaches it (a reader behind the stream would otherwise count a member who left
        since out, or one who joined since in). The current state serves when it is that
        group (the usual case: evaluation keeps up, and a batch of messages shares its
        group), else the group's state is read. Without a group (not known), the current
        state, as of old: read again after a state event."""
        info = self._rooms.get(room_id)
        if info is not None and (info.group == group if group is not None else not is_state):
            self._rooms.move_to_end(room_id)
            return info
        version = await self._engine.room_version(room_id)
        if version is None:
            return None
        state, head_group = await self._engine.current_state_and_group(room_id)
        if group is not None and head_group != group:
            state, head_group = await state_events_at_group(self._engine, group), group
        info = self._rooms[room_id] = _room_info(state, version, self._suffix)
        info.group = head_group
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
        """The users' compiled rules, read for those not held: the rules as evaluation
        reaches an event. A read that someone's rules changed during (rules_changed) serves
        this evaluation only and is not kept: it may predate the change, and kept it would
        apply the old rules to every later event (a rule set just before a send was ignored
        now and then under load)."""
        cache = self._rules
        out = {u: cache[u] for u in user_ids if u in cache}
        missing = [u for u in user_ids if u not in out]
        if not missing:
            return out
        generation = self._generation
        stored = await self._rule_store.rules_for_users(missing)
        read = {u: compile_rules(ruleset_from_stored(*stored[u])) if u in stored
                else self._defaults for u in missing}
        if self._generation == generation:
            cache.update(read)
            while len(cache) > RULES_CACHE_SIZE:
                cache.popitem(last=False)
        out.update(read)
        return {u: out[u] for u in user_ids}
