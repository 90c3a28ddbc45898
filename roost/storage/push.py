"""Push rules, push actions and pushers (the tables of 0012_push.sql).

Every transaction function here is safe to re-run: rule reorders rewrite the
kind's priorities whole, inserts ignore or overwrite rows already there, and
deletes name their rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from roost.storage.database import Database, Txn

_NEVER = -(2**62)
# The newest read position per room and thread: receipts (public or private, threaded
# or not) and the user's own events, whichever is furthest.
_READS = """
WITH reads AS (
    SELECT rc.room_id, rc.thread_id, e.stream_ordering AS pos
    FROM receipts rc JOIN events e ON e.event_id = rc.event_id
    WHERE rc.user_id = %(user)s AND rc.room_id = ANY(%(rooms)s)
      AND rc.receipt_type IN ('m.read', 'm.read.private')
    UNION ALL
    SELECT room_id, thread_id, stream_ordering FROM push_own_reads
    WHERE user_id = %(user)s AND room_id = ANY(%(rooms)s)
), best AS (SELECT room_id, thread_id, MAX(pos) AS pos FROM reads GROUP BY room_id, thread_id)
"""
_UNREAD = ("a.stream_ordering > GREATEST(COALESCE(u.pos, %(never)s), COALESCE(t.pos, %(never)s))")
_JOIN_READS = (" LEFT JOIN best u ON u.room_id = a.room_id AND u.thread_id = ''"
               " LEFT JOIN best t ON t.room_id = a.room_id AND t.thread_id = a.thread_id")


@dataclass(frozen=True)
class StoredRule:
    kind: str
    rule_id: str
    conditions: list[Any] | None
    pattern: str | None
    actions: list[Any]
    enabled: bool


# One notifying outcome of an event: (stream_ordering, n, room, event, thread, actions
# JSON, highlight, ts, user ids). Plain tuples: a busy room makes one per message.
ActionRow = tuple[int, int, str, str, str, str, bool, int, list[str]]
# (stream_ordering, event_id, room_id, type, sender, state_key, content JSON, ts)
EventRow = tuple[int, str, str, str, str, str | None, str, int, int | None]
# (sender, room, thread, stream_ordering): sending an event reads the room up to it.
OwnRead = tuple[str, str, str, int]


class PushWrite(NamedTuple):
    """A batch's evaluation as stored: its notifying outcomes, its senders' read positions
    and the evaluator's new position. Written by `PushActionStore.record`, or inside the
    persist of the very events it evaluated (events.RoomBatch.push: push/evaluator.py's
    `prepare`), whose transaction it then shares."""

    rows: list[ActionRow]
    own_reads: list[OwnRead]
    position: int


@dataclass(frozen=True)
class Notification:
    stream_ordering: int
    room_id: str
    event_id: str
    actions: list[Any]
    ts: int
    read: bool


@dataclass(frozen=True)
class Pusher:
    user_id: str
    app_id: str
    pushkey: str
    device_id: str | None
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, Any]
    created_ts: int
    last_stream_ordering: int


_PUSHER_COLUMNS = ("user_id, app_id, pushkey, device_id, kind, app_display_name,"
                   " device_display_name, profile_tag, lang, data, created_ts, last_stream_ordering")


def _pusher(row: tuple[Any, ...]) -> Pusher:
    values = list(row)
    values[9] = json.loads(values[9])
    return Pusher(*values)


class PushRuleStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def rules_for_users(self, user_ids: list[str]
                              ) -> dict[str, tuple[list[StoredRule], dict[str, dict[str, Any]]]]:
        """user -> (their rules in priority order per kind, changes to defaults); users with
        neither are left out."""
        if not user_ids:
            return {}
        return await self._db.run("push_rules_for_users", _rules_for_users, user_ids)

    async def put_rule(self, user_id: str, rule: StoredRule, before: str | None,
                       after: str | None) -> str | None:
        """Add or replace a rule, placed before/after another of its kind (default: first).
        Returns an error message (nothing changed) if before/after names no rule."""
        return await self._db.run("push_put_rule", _put_rule, user_id, rule, before, after)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> bool:
        def txn_fn(txn: Txn) -> bool:
            txn.execute("DELETE FROM push_rules WHERE user_id = %s AND kind = %s AND rule_id = %s",
                        (user_id, kind, rule_id))
            return txn.rowcount > 0

        return await self._db.run("push_delete_rule", txn_fn)

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> bool:
        return await self._db.run("push_set_enabled", _set_user_rule_field, user_id, kind,
                                  rule_id, "enabled", enabled)

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: list[Any]) -> bool:
        return await self._db.run("push_set_actions", _set_user_rule_field, user_id, kind,
                                  rule_id, "actions", json.dumps(actions))

    async def change_default(self, user_id: str, rule_id: str, enabled: bool | None = None,
                             actions: list[Any] | None = None) -> None:
        column, value = ("enabled", enabled) if enabled is not None else (
            "actions", json.dumps(actions))
        await self._db.run(
            "push_change_default",
            lambda t: t.execute(
                f"INSERT INTO push_rule_defaults (user_id, rule_id, {column}) VALUES (%s, %s, %s)"
                f" ON CONFLICT (user_id, rule_id) DO UPDATE SET {column} = EXCLUDED.{column}",
                (user_id, rule_id, value)))


def _rules_for_users(txn: Txn, user_ids: list[str]
                     ) -> dict[str, tuple[list[StoredRule], dict[str, dict[str, Any]]]]:
    out: dict[str, tuple[list[StoredRule], dict[str, dict[str, Any]]]] = {}
    for user, kind, rule_id, conditions, pattern, actions, enabled in txn.query(
            "SELECT user_id, kind, rule_id, conditions, pattern, actions, enabled FROM push_rules"
            " WHERE user_id = ANY(%s) ORDER BY user_id, kind, priority", (user_ids,)):
        out.setdefault(user, ([], {}))[0].append(StoredRule(
            kind, rule_id, json.loads(conditions) if conditions is not None else None, pattern,
            json.loads(actions), enabled))
    for user, rule_id, enabled, actions in txn.query(
            "SELECT user_id, rule_id, enabled, actions FROM push_rule_defaults"
            " WHERE user_id = ANY(%s)", (user_ids,)):
        change: dict[str, Any] = {}
        if enabled is not None:
            change["enabled"] = enabled
        if actions is not None:
            change["actions"] = json.loads(actions)
        out.setdefault(user, ([], {}))[1][rule_id] = change
    return out


def _put_rule(txn: Txn, user_id: str, rule: StoredRule, before: str | None,
              after: str | None) -> str | None:
    txn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("push_rules:" + user_id,))
    rows = txn.query("SELECT rule_id, enabled FROM push_rules WHERE user_id = %s AND kind = %s"
                     " ORDER BY priority", (user_id, rule.kind))
    order = [r[0] for r in rows]
    enabled = {r[0]: r[1] for r in rows}
    existed = rule.rule_id in order
    relative = before or after
    if relative is not None and (relative not in order or relative == rule.rule_id):
        return f"before/after rule not found: {relative}"
    if relative is not None or not existed:
        if existed:
            order.remove(rule.rule_id)
        if relative is None:
            order.insert(0, rule.rule_id)
        else:
            at = order.index(relative)
            order.insert(at if before else at + 1, rule.rule_id)
    txn.execute("DELETE FROM push_rules WHERE user_id = %s AND kind = %s AND rule_id = %s",
                (user_id, rule.kind, rule.rule_id))
    txn.execute(
        "INSERT INTO push_rules (user_id, kind, rule_id, priority, conditions, pattern, actions,"
        " enabled) VALUES (%s, %s, %s, 0, %s, %s, %s, %s)",
        (user_id, rule.kind, rule.rule_id,
         json.dumps(rule.conditions) if rule.conditions is not None else None, rule.pattern,
         json.dumps(rule.actions), enabled.get(rule.rule_id, True)))
    txn.execute(
        "UPDATE push_rules SET priority = v.priority FROM unnest(%s::text[], %s::int[])"
        " AS v(rule_id, priority) WHERE push_rules.user_id = %s AND push_rules.kind = %s"
        " AND push_rules.rule_id = v.rule_id",
        (order, list(range(len(order))), user_id, rule.kind))
    return None


def _set_user_rule_field(txn: Txn, user_id: str, kind: str, rule_id: str, column: str,
                         value: Any) -> bool:
    assert column in ("enabled", "actions")
    txn.execute(f"UPDATE push_rules SET {column} = %s WHERE user_id = %s AND kind = %s"
                " AND rule_id = %s", (value, user_id, kind, rule_id))
    return txn.rowcount > 0


class PushActionStore:
    """What evaluation leaves behind, and the counts and lists read from it."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_position(self) -> int | None:
        row = await self._db.run(
            "push_position",
            lambda t: t.query_one("SELECT stream_position FROM push_evaluator_position"))
        return int(row[0]) if row else None

    async def events_after(self, after: int, upto: int, limit: int) -> list[EventRow]:
        """(stream_ordering, event_id, room_id, type, sender, state_key, content JSON, ts,
        state group) of accepted timeline events. Only the content is sent, not the whole PDU with its
        hashes, signatures and edges: evaluation reads nothing else of it."""
        return await self._db.run("push_events_after", _events_after, after, upto, limit)

    async def thread_of_events(self, event_ids: list[str]) -> dict[str, str]:
        """event -> its thread root, for events that are in a thread (an m.thread relation)."""
        if not event_ids:
            return {}
        rows = await self._db.run(
            "push_threads_of",
            lambda t: t.query(
                "SELECT event_id, relates_to_id FROM event_relations"
                " WHERE event_id = ANY(%s) AND rel_type = 'm.thread'", (event_ids,)))
        return {r[0]: r[1] for r in rows}

    async def record(self, rows: list[ActionRow], own_reads: list[tuple[str, str, str, int]],
                     new_position: int, read_upto: int | None = None, limit: int = 0
                     ) -> list[EventRow]:
        """Store a batch's actions and its senders' read positions; move the position. With
        `read_upto`, the same transaction then reads the events after the new position up
        to there (`events_after`): the next batch costs no round trip of its own."""
        def txn_fn(txn: Txn) -> list[EventRow]:
            _record(txn, rows, own_reads, new_position)
            if read_upto is None or read_upto <= new_position:
                return []
            return _events_after(txn, new_position, read_upto, limit)

        return await self._db.run("push_record", txn_fn)

    async def unread_counts(self, user_id: str, room_ids: list[str]
                            ) -> dict[str, dict[str, tuple[int, int]]]:
        """room -> thread ('main' or a root) -> (notifications, highlights) not yet read."""
        if not room_ids:
            return {}
        rows = await self._db.run(
            "push_unread_counts",
            lambda t: t.query(
                _READS + "SELECT a.room_id, a.thread_id, COUNT(*),"
                " COUNT(*) FILTER (WHERE a.highlight) FROM push_actions a" + _JOIN_READS +
                " WHERE a.room_id = ANY(%(rooms)s) AND %(user)s = ANY(a.user_ids) AND "
                + _UNREAD + " GROUP BY a.room_id, a.thread_id",
                {"user": user_id, "rooms": room_ids, "never": _NEVER}))
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for room, thread, count, highlights in rows:
            out.setdefault(room, {})[thread] = (int(count), int(highlights))
        return out

    async def unread_counts_at(self, user_id: str, room_ids: list[str]
                               ) -> tuple[dict[str, dict[str, tuple[int, int]]], int | None]:
        """`unread_counts`, and the evaluator's stored position they are as of (None: it
        never ran). One statement, so both come from one snapshot: a process that follows
        the evaluator's increments (push/shared_counts.py) keeps the counts only when they
        are as of the position it has applied."""
        if not room_ids:
            return {}, await self.get_position()
        rows = await self._db.run(
            "push_unread_counts_at",
            lambda t: t.query(
                _READS + ", counts AS (SELECT a.room_id, a.thread_id, COUNT(*) AS n,"
                " COUNT(*) FILTER (WHERE a.highlight) AS h FROM push_actions a" + _JOIN_READS +
                " WHERE a.room_id = ANY(%(rooms)s) AND %(user)s = ANY(a.user_ids) AND "
                + _UNREAD + " GROUP BY a.room_id, a.thread_id)"
                " SELECT p.stream_position, c.room_id, c.thread_id, c.n, c.h"
                " FROM (SELECT (SELECT stream_position FROM push_evaluator_position)"
                " AS stream_position) p LEFT JOIN counts c ON true",
                {"user": user_id, "rooms": room_ids, "never": _NEVER}))
        out: dict[str, dict[str, tuple[int, int]]] = {}
        position = None
        for stored, room, thread, count, highlights in rows:
            position = None if stored is None else int(stored)
            if room is not None:
                out.setdefault(room, {})[thread] = (int(count), int(highlights))
        return out, position

    async def total_unread(self, user_id: str) -> int:
        """Unread notifications over all the user's rooms (the badge a push carries)."""
        def txn_fn(txn: Txn) -> int:
            rooms = [r[0] for r in txn.query(
                "SELECT room_id FROM current_state WHERE type = 'm.room.member'"
                " AND state_key = %s AND membership = 'join'", (user_id,))]
            row = txn.query_one(
                _READS + "SELECT COUNT(*) FROM push_actions a" + _JOIN_READS +
                " WHERE a.room_id = ANY(%(rooms)s) AND %(user)s = ANY(a.user_ids) AND "
                + _UNREAD, {"user": user_id, "rooms": rooms, "never": _NEVER})
            return int(row[0]) if row else 0

        return await self._db.run("push_total_unread", txn_fn)

    async def notifications(self, user_id: str, before: int | None, limit: int,
                            highlight_only: bool) -> list[Notification]:
        """The user's notifications, newest first, each said read or not."""
        def txn_fn(txn: Txn) -> list[Notification]:
            rows = txn.query(
                "SELECT stream_ordering, room_id, event_id, actions, ts, thread_id FROM push_actions"
                " WHERE %s = ANY(user_ids) AND stream_ordering < %s AND (highlight OR NOT %s)"
                " ORDER BY stream_ordering DESC LIMIT %s",
                (user_id, before if before is not None else 2**62, highlight_only, limit))
            if not rows:
                return []
            rooms = sorted({r[1] for r in rows})
            best: dict[tuple[str, str], int] = {
                (room, thread): int(pos) for room, thread, pos in txn.query(
                    _READS + "SELECT room_id, thread_id, pos FROM best",
                    {"user": user_id, "rooms": rooms})}
            out = []
            for position, room, event_id, actions, ts, thread in rows:
                read_upto = max(best.get((room, ""), _NEVER), best.get((room, thread), _NEVER))
                out.append(Notification(position, room, event_id, json.loads(actions), ts,
                                        position <= read_upto))
            return out

        return await self._db.run("push_notifications", txn_fn)

    async def pending_for(self, user_id: str, after: int, upto: int, limit: int
                          ) -> list[tuple[int, str, str, list[Any]]]:
        """(stream_ordering, room, event, actions) of the user's notifications in (after, upto]."""
        rows = await self._db.run(
            "push_pending_for",
            lambda t: t.query(
                "SELECT stream_ordering, room_id, event_id, actions FROM push_actions"
                " WHERE stream_ordering > %s AND stream_ordering <= %s AND %s = ANY(user_ids)"
                " ORDER BY stream_ordering LIMIT %s", (after, upto, user_id, limit)))
        return [(int(r[0]), r[1], r[2], json.loads(r[3])) for r in rows]


def _events_after(txn: Txn, after: int, upto: int, limit: int) -> list[EventRow]:
    rows = txn.query(
        "SELECT stream_ordering, event_id, room_id, type, sender, state_key,"
        " (pdu::json) ->> 'content', origin_server_ts, state_group FROM events"
        " WHERE stream_ordering > %s AND stream_ordering <= %s"
        " AND rejected_reason IS NULL AND NOT outlier AND NOT soft_failed"
        " ORDER BY stream_ordering LIMIT %s", (after, upto, limit))
    return [tuple(r) for r in rows]  # type: ignore[misc]


def text_array(values: list[str]) -> str:
    """A PostgreSQL array literal: psycopg2 adapting a list of fifty ids cost three times
    as much as formatting the literal here (a row per message in a room of fifty). Ids
    rarely hold a quote or a backslash, so the literal is joined in one go unless one does
    (escaping each id cost a send of the benchmark more than the rest of push's write)."""
    if not values:
        return "{}"
    joined = "".join(values)
    if '"' in joined or "\\" in joined:
        values = [v.replace("\\", "\\\\").replace('"', '\\"') for v in values]
    return '{"' + '","'.join(values) + '"}'


_ACTION_VALUES = "(%s, %s, %s, %s, %s, %s, %s, %s, %s)"
_OWN_READ_VALUES = "(%s, %s, %s, %s)"


def record_statement(rows: list[ActionRow], own_reads: list[tuple[str, str, str, int]],
                     new_position: int) -> tuple[str, list[Any]]:
    """A batch's write as one statement (its inserts as data-modifying CTEs): under fan-out
    every message is a batch, and each statement of a transaction is a round trip whose
    hand-off between threads cost the server more CPU than the statement itself (three
    statements took ~0.5 ms of Roost CPU a batch, this one ~0.3; bench/push_record.py).
    The parts touch different tables, so running them in one snapshot changes nothing."""
    parts: list[str] = []
    args: list[Any] = []
    if rows:
        parts.append(
            "a AS (INSERT INTO push_actions (stream_ordering, n, room_id, event_id, thread_id,"
            " actions, highlight, ts, user_ids) VALUES "
            + ", ".join([_ACTION_VALUES] * len(rows)) + " ON CONFLICT DO NOTHING)")
        for row in rows:
            args.extend(row[:8])
            args.append(text_array(row[8]))
    if own_reads:
        parts.append(
            "r AS (INSERT INTO push_own_reads (user_id, room_id, thread_id, stream_ordering)"
            " VALUES " + ", ".join([_OWN_READ_VALUES] * len(own_reads)) +
            " ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET stream_ordering ="
            " GREATEST(push_own_reads.stream_ordering, EXCLUDED.stream_ordering))")
        for read in own_reads:
            args.extend(read)
    args.append(new_position)
    return (("WITH " + ", ".join(parts) + " " if parts else "") +
            "INSERT INTO push_evaluator_position (lock, stream_position) VALUES ('X', %s)"
            " ON CONFLICT (lock) DO UPDATE SET stream_position = EXCLUDED.stream_position",
            args)


def _record(txn: Txn, rows: list[ActionRow], own_reads: list[tuple[str, str, str, int]],
            new_position: int) -> None:
    txn.execute(*record_statement(rows, own_reads, new_position))


class PusherStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def all(self) -> list[Pusher]:
        rows = await self._db.run(
            "pushers_all", lambda t: t.query(f"SELECT {_PUSHER_COLUMNS} FROM pushers"))
        return [_pusher(r) for r in rows]

    async def for_user(self, user_id: str) -> list[Pusher]:
        rows = await self._db.run(
            "pushers_for_user",
            lambda t: t.query(f"SELECT {_PUSHER_COLUMNS} FROM pushers WHERE user_id = %s"
                              " ORDER BY created_ts, app_id, pushkey", (user_id,)))
        return [_pusher(r) for r in rows]

    async def add(self, pusher: Pusher, append: bool) -> list[tuple[str, str, str]]:
        """Add or replace the user's pusher; unless `append`, other users' pushers with the same
        app id and pushkey go. Returns the (user, app id, pushkey) of pushers removed."""
        def txn_fn(txn: Txn) -> list[tuple[str, str, str]]:
            removed: list[tuple[str, str, str]] = []
            if not append:
                removed = [tuple(r) for r in txn.query(  # type: ignore[misc]
                    "DELETE FROM pushers WHERE app_id = %s AND pushkey = %s AND user_id <> %s"
                    " RETURNING user_id, app_id, pushkey",
                    (pusher.app_id, pusher.pushkey, pusher.user_id))]
            txn.execute(
                f"INSERT INTO pushers ({_PUSHER_COLUMNS}) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET"
                " device_id = EXCLUDED.device_id, kind = EXCLUDED.kind,"
                " app_display_name = EXCLUDED.app_display_name,"
                " device_display_name = EXCLUDED.device_display_name,"
                " profile_tag = EXCLUDED.profile_tag, lang = EXCLUDED.lang, data = EXCLUDED.data",
                (pusher.user_id, pusher.app_id, pusher.pushkey, pusher.device_id, pusher.kind,
                 pusher.app_display_name, pusher.device_display_name, pusher.profile_tag,
                 pusher.lang, json.dumps(pusher.data), pusher.created_ts,
                 pusher.last_stream_ordering))
            return removed

        return await self._db.run("pushers_add", txn_fn)

    async def remove(self, user_id: str, app_id: str, pushkey: str) -> bool:
        def txn_fn(txn: Txn) -> bool:
            txn.execute("DELETE FROM pushers WHERE user_id = %s AND app_id = %s AND pushkey = %s",
                        (user_id, app_id, pushkey))
            return txn.rowcount > 0

        return await self._db.run("pushers_remove", txn_fn)

    async def remove_by_key(self, app_id: str, pushkey: str) -> list[str]:
        """Every user's pusher with this app id and pushkey (the gateway rejected the key)."""
        rows = await self._db.run(
            "pushers_remove_key",
            lambda t: t.query("DELETE FROM pushers WHERE app_id = %s AND pushkey = %s"
                              " RETURNING user_id", (app_id, pushkey)))
        return [r[0] for r in rows]

    async def remove_other_devices(self, user_id: str, keep_device: str | None
                                   ) -> list[tuple[str, str]]:
        """The user's pushers not made from `keep_device` (a password change)."""
        rows = await self._db.run(
            "pushers_remove_others",
            lambda t: t.query(
                "DELETE FROM pushers WHERE user_id = %s AND device_id IS DISTINCT FROM %s"
                " RETURNING app_id, pushkey", (user_id, keep_device)))
        return [(r[0], r[1]) for r in rows]

    async def set_position(self, user_id: str, app_id: str, pushkey: str, position: int) -> None:
        await self._db.run(
            "pushers_set_position",
            lambda t: t.execute(
                "UPDATE pushers SET last_stream_ordering = GREATEST(last_stream_ordering, %s)"
                " WHERE user_id = %s AND app_id = %s AND pushkey = %s",
                (position, user_id, app_id, pushkey)))
