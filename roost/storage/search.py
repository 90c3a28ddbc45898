"""Full-text search over room events: the index (table event_search) and its queries.

The indexer (roost.client_api.search_index) calls `index_upto` with positions
of the events stream; the text of each searchable event is taken out of its
JSON here, in Python, so that odd content (a NUL, a body that is not a string)
is skipped or cleaned instead of failing the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from roost.storage.database import Database, Txn

# event type -> (the search key it is found under, the content field holding the text)
SEARCHABLE = {
    "m.room.message": ("content.body", "body"),
    "m.room.name": ("content.name", "name"),
    "m.room.topic": ("content.topic", "topic"),
}
# Text is indexed twice: stemmed by the 'english' configuration ("cats" finds "cat") and
# word for word by 'simple', so words English drops as stop words ("after", "the") and
# names stemming would mangle still match. A query is asked both ways, either may match.
_VECTOR = "(to_tsvector('english', {0}) || to_tsvector('simple', {0}))"
_QUERY = "(websearch_to_tsquery('english', {0}) || websearch_to_tsquery('simple', {0}))"
# The longest text indexed per event (to_tsvector refuses over 1 MiB of lexemes).
MAX_TEXT_CHARS = 100_000


@dataclass(frozen=True)
class SearchFilter:
    """The parts of a RoomEventFilter the index can apply itself."""

    senders: list[str] | None = None
    not_senders: list[str] | None = None
    types: list[str] | None = None
    not_types: list[str] | None = None
    contains_url: bool | None = None


@dataclass(frozen=True)
class SearchHit:
    event_id: str
    room_id: str
    rank: float
    stream_ordering: int


def _like(pattern: str) -> str:
    """A filter's type pattern (`*` any run of characters) as a LIKE pattern."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _row_for(event_id: str, room_id: str, stream_ordering: int, pdu: str
             ) -> tuple[Any, ...] | None:
    try:
        # orjson: three times faster than json; only strings are read from what it gives
        # (it would turn a huge integer into a float), and what it refuses json reads.
        event = orjson.loads(pdu)
    except orjson.JSONDecodeError:
        try:
            event = json.loads(pdu)
        except ValueError:
            return None
    searchable = SEARCHABLE.get(event.get("type"))
    content = event.get("content")
    if searchable is None or not isinstance(content, dict):
        return None
    key, field = searchable
    text = content.get(field)
    if not isinstance(text, str) or not text.strip():
        return None
    text = text.replace("\x00", " ")[:MAX_TEXT_CHARS]
    contains_url = isinstance(content.get("url"), str)
    return (event_id, room_id, str(event.get("sender", "")), event["type"], key, contains_url,
            stream_ordering, text)


def _insert(txn: Txn, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        txn.execute_values(
            "INSERT INTO event_search (event_id, room_id, sender, type, key,"
            " contains_url, stream_ordering, vector)"
            " SELECT v.event_id, v.room_id, v.sender, v.type, v.key, v.contains_url,"
            f" v.stream_ordering, {_VECTOR.format('v.text')}"
            " FROM (VALUES %s) AS v (event_id, room_id, sender, type, key,"
            " contains_url, stream_ordering, text)"
            " ON CONFLICT (event_id) DO NOTHING", rows)


class SearchStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def position(self) -> int:
        row = await self._db.run(
            "search_position",
            lambda t: t.query_one("SELECT stream_ordering FROM event_search_position"))
        return int(row[0]) if row else 0

    async def index_backfilled(self, batch: int = 500) -> int:
        """Index searchable history backfilled since the last call (positions below zero,
        handed out downwards); returns how many events were looked at. Safe to re-run."""

        def txn_fn(txn: Txn) -> int:
            row = txn.query_one(
                "SELECT backfill_ordering FROM event_search_position FOR UPDATE")
            below = int(row[0]) if row else 0
            # Every event below the mark is read once (the mark moves past them all);
            # only the searchable ones are indexed.
            events = txn.query(
                "SELECT event_id, room_id, stream_ordering, type, outlier OR soft_failed"
                " OR rejected_reason IS NOT NULL FROM events WHERE stream_ordering < %s"
                " ORDER BY stream_ordering DESC LIMIT %s", (below, batch))
            if not events:
                return 0
            wanted = [e[0] for e in events if e[3] in SEARCHABLE and not e[4]]
            if wanted:
                pdus = txn.query(
                    "SELECT event_id, room_id, stream_ordering, pdu FROM events"
                    " WHERE event_id = ANY(%s)", (wanted,))
                _insert(txn, [r for r in (_row_for(*e) for e in pdus) if r is not None])
            txn.execute("UPDATE event_search_position SET backfill_ordering = %s",
                        (int(events[-1][2]),))
            return len(events)

        return int(await self._db.run("index_search_backfilled", txn_fn))

    async def index_upto(self, upto: int, batch: int = 500) -> int:
        """Index the searchable events after the stored position, at most `batch` of them and
        none above `upto`; returns the new position. Safe to re-run: rows already indexed
        are kept, and the position only moves forward."""

        def txn_fn(txn: Txn) -> int:
            row = txn.query_one("SELECT stream_ordering FROM event_search_position FOR UPDATE")
            after = int(row[0]) if row else 0
            if after >= upto:
                return after
            events = txn.query(
                "SELECT event_id, room_id, stream_ordering, pdu FROM events"
                " WHERE stream_ordering > %s AND stream_ordering <= %s"
                " AND type = ANY(%s) AND NOT outlier AND NOT soft_failed"
                " AND rejected_reason IS NULL"
                " ORDER BY stream_ordering LIMIT %s",
                (after, upto, list(SEARCHABLE), batch))
            _insert(txn, [r for r in (_row_for(*e) for e in events) if r is not None])
            reached = int(events[-1][2]) if len(events) == batch else upto
            txn.execute("UPDATE event_search_position SET stream_ordering = %s", (reached,))
            return reached

        return int(await self._db.run("index_search", txn_fn))

    async def search(self, room_ids: Sequence[str], term: str, keys: Sequence[str],
                     filt: SearchFilter, by_rank: bool, limit: int, offset: int = 0,
                     before: int | None = None) -> tuple[list[SearchHit], int]:
        """A page of matches in `room_ids`, best (or newest) first, and how many match in all.

        `offset` pages by rank; `before` (a stream position) pages by recency."""
        if not room_ids or not keys:
            return [], 0
        where = ["s.vector @@ q.query", "s.room_id = ANY(%(rooms)s)", "s.key = ANY(%(keys)s)"]
        args: dict[str, Any] = {"term": term, "rooms": list(room_ids), "keys": list(keys),
                                "limit": limit, "offset": offset}
        for column, name, values, negate in (
            ("s.sender", "senders", filt.senders, False),
            ("s.sender", "not_senders", filt.not_senders, True),
        ):
            if values is not None:
                args[name] = values
                where.append(f"{'NOT ' if negate else ''}({column} = ANY(%({name})s))")
        if filt.types is not None:
            args["types"] = [_like(t) for t in filt.types]
            where.append("s.type LIKE ANY(%(types)s)")
        if filt.not_types:
            args["not_types"] = [_like(t) for t in filt.not_types]
            where.append("NOT (s.type LIKE ANY(%(not_types)s))")
        if filt.contains_url is not None:
            args["url"] = filt.contains_url
            where.append("s.contains_url = %(url)s")
        counted = " AND ".join(where)
        if before is not None:
            args["before"] = before
            where.append("s.stream_ordering < %(before)s")
        order = "rank DESC, s.stream_ordering DESC" if by_rank else "s.stream_ordering DESC"
        source = f"FROM event_search s, (SELECT {_QUERY.format('%(term)s')} AS query) AS q"

        def txn_fn(txn: Txn) -> tuple[list[SearchHit], int]:
            rows = txn.query(
                f"SELECT s.event_id, s.room_id, ts_rank_cd(s.vector, q.query) AS rank,"
                f" s.stream_ordering {source} WHERE {' AND '.join(where)}"
                f" ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s", args)
            count = txn.query_one(f"SELECT count(*) {source} WHERE {counted}", args)
            return ([SearchHit(r[0], r[1], float(r[2]), int(r[3])) for r in rows],
                    int(count[0]) if count else 0)

        return await self._db.run("search_events", txn_fn)

    async def lexemes(self, term: str) -> list[str]:
        """The words of a search term as the index stems them (the answer's highlights)."""
        row = await self._db.run(
            "search_lexemes",
            lambda t: t.query_one(
                "SELECT array_agg(DISTINCT lexeme) FROM unnest("
                f"{_VECTOR.format('%(term)s')})", {"term": term}))
        return sorted(row[0] or []) if row else []
