"""Relations between events: edits, threads, reactions (the event_relations table)."""

from __future__ import annotations

from dataclasses import dataclass

from roost.storage.database import Database, Txn


@dataclass(frozen=True)
class ThreadSummary:
    count: int
    latest_event_id: str
    participated: bool


@dataclass(frozen=True)
class Aggregations:
    edits: dict[str, str]
    threads: dict[str, ThreadSummary]
    reactions: dict[str, list[tuple[str, str, int]]]


class RelationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def latest_edits(self, targets: dict[str, str]) -> dict[str, str]:
        """target event id -> its latest m.replace by the target's own sender.

        `targets` maps event id -> sender; edits by anyone else are ignored, as
        the spec says.
        """
        if not targets:
            return {}
        return await self._db.run("latest_edits", _latest_edits, targets)

    async def thread_summaries(self, roots: list[str], user_id: str) -> dict[str, ThreadSummary]:
        if not roots:
            return {}
        return await self._db.run("thread_summaries", _thread_summaries, roots, user_id)

    async def annotation_counts(self, targets: list[str]) -> dict[str, list[tuple[str, str, int]]]:
        """target -> [(event type, key, count)], most used first."""
        if not targets:
            return {}
        return await self._db.run("annotation_counts", _annotation_counts, targets)

    async def aggregations(self, targets: dict[str, str], user_id: str) -> Aggregations:
        """Edits, thread summaries and reaction counts of the targets, in one transaction.

        Serving a page of events asks for all three; one round trip, and a
        first query that finds which kinds exist at all, keep the common case
        (no relations) to a single cheap statement (bench/sync_fanout.py).
        """
        if not targets:
            return Aggregations({}, {}, {})
        return await self._db.run("aggregations", _aggregations, targets, user_id)

    async def has_annotation(self, target: str, sender: str, event_type: str, key: str) -> bool:
        """Whether the sender already annotated `target` with this type and key (unredacted)."""
        row = await self._db.run(
            "has_annotation",
            lambda t: t.query_one(
                "SELECT 1 FROM event_relations r WHERE r.relates_to_id = %s AND r.sender = %s"
                " AND r.event_type = %s AND r.aggregation_key = %s AND r.rel_type = 'm.annotation'"
                " AND NOT EXISTS (SELECT 1 FROM redactions d WHERE d.redacts = r.event_id)",
                (target, sender, event_type, key),
            ),
        )
        return row is not None

    async def related_events(
        self, target: str, rel_type: str | None, event_type: str | None,
        from_pos: int | None, backwards: bool, limit: int,
    ) -> list[tuple[str, int]]:
        """(event id, stream position) of events relating to `target`, paginated by position."""
        clauses, args = ["relates_to_id = %s"], [target]
        if rel_type is not None:
            clauses.append("rel_type = %s")
            args.append(rel_type)
        if event_type is not None:
            clauses.append("event_type = %s")
            args.append(event_type)
        if from_pos is not None:
            clauses.append("stream_ordering " + ("< %s" if backwards else "> %s"))
            args.append(from_pos)  # type: ignore[arg-type]
        order = "DESC" if backwards else "ASC"
        rows = await self._db.run(
            "related_events",
            lambda t: t.query(
                f"SELECT event_id, stream_ordering FROM event_relations WHERE {' AND '.join(clauses)}"
                f" ORDER BY stream_ordering {order} LIMIT %s",
                (*args, limit),
            ),
        )
        return [(r[0], r[1]) for r in rows]

    async def thread_roots(
        self, room_id: str, from_pos: int | None, limit: int, participated_by: str | None
    ) -> list[tuple[str, int]]:
        """Thread roots of the room, most recently active first: (root id, latest position)."""
        return await self._db.run(
            "thread_roots", _thread_roots, room_id, from_pos, limit, participated_by
        )


def _thread_summaries(txn: Txn, roots: list[str], user_id: str) -> dict[str, ThreadSummary]:
    rows = txn.query(
        "SELECT r.relates_to_id, COUNT(*),"
        " (ARRAY_AGG(r.event_id ORDER BY r.stream_ordering DESC))[1],"
        " BOOL_OR(r.sender = %s)"
        " FROM event_relations r WHERE r.relates_to_id = ANY(%s) AND r.rel_type = 'm.thread'"
        " GROUP BY r.relates_to_id",
        (user_id, roots),
    )
    summaries = {r[0]: ThreadSummary(int(r[1]), r[2], bool(r[3])) for r in rows}
    senders = dict(txn.query("SELECT event_id, sender FROM events WHERE event_id = ANY(%s)",
                             (list(summaries),)))
    return {
        root: ThreadSummary(s.count, s.latest_event_id, s.participated or senders.get(root) == user_id)
        for root, s in summaries.items()
    }


def _thread_roots(
    txn: Txn, room_id: str, from_pos: int | None, limit: int, participated_by: str | None
) -> list[tuple[str, int]]:
    having = ""
    args: list[object] = [room_id]
    if participated_by is not None:
        having = (" HAVING BOOL_OR(r.sender = %s) OR EXISTS (SELECT 1 FROM events e"
                  " WHERE e.event_id = r.relates_to_id AND e.sender = %s)")
        args += [participated_by, participated_by]
    rows = txn.query(
        "SELECT r.relates_to_id, MAX(r.stream_ordering) AS latest FROM event_relations r"
        " WHERE r.room_id = %s AND r.rel_type = 'm.thread'"
        f" GROUP BY r.relates_to_id{having}",
        args,
    )
    ordered = sorted(((r[0], int(r[1])) for r in rows), key=lambda x: -x[1])
    if from_pos is not None:
        ordered = [r for r in ordered if r[1] < from_pos]
    return ordered[:limit]


def _latest_edits(txn: Txn, targets: dict[str, str]) -> dict[str, str]:
    rows = txn.query(
        "SELECT DISTINCT ON (r.relates_to_id) r.relates_to_id, r.event_id"
        " FROM event_relations r JOIN unnest(%s::text[], %s::text[]) AS x(id, sender)"
        " ON r.relates_to_id = x.id AND r.sender = x.sender"
        " WHERE r.rel_type = 'm.replace'"
        " AND NOT EXISTS (SELECT 1 FROM redactions d WHERE d.redacts = r.event_id)"
        " ORDER BY r.relates_to_id, r.stream_ordering DESC",
        (list(targets), list(targets.values())),
    )
    return {r[0]: r[1] for r in rows}


def _annotation_counts(txn: Txn, targets: list[str]) -> dict[str, list[tuple[str, str, int]]]:
    rows = txn.query(
        "SELECT r.relates_to_id, r.event_type, r.aggregation_key, COUNT(*)"
        " FROM event_relations r WHERE r.relates_to_id = ANY(%s)"
        " AND r.rel_type = 'm.annotation' AND r.aggregation_key IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM redactions d WHERE d.redacts = r.event_id)"
        " GROUP BY 1, 2, 3 ORDER BY 1, 4 DESC, 3",
        (targets,),
    )
    result: dict[str, list[tuple[str, str, int]]] = {}
    for target, event_type, key, count in rows:
        result.setdefault(target, []).append((event_type, key, int(count)))
    return result


def _aggregations(txn: Txn, targets: dict[str, str], user_id: str) -> Aggregations:
    kinds = {r[0] for r in txn.query(
        "SELECT DISTINCT rel_type FROM event_relations WHERE relates_to_id = ANY(%s)",
        (list(targets),))}
    ids = list(targets)
    return Aggregations(
        _latest_edits(txn, targets) if "m.replace" in kinds else {},
        _thread_summaries(txn, ids, user_id) if "m.thread" in kinds else {},
        _annotation_counts(txn, ids) if "m.annotation" in kinds else {},
    )
