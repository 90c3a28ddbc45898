"""Reports of events, rooms and users, kept for the admins (the admin API reads them)."""

from __future__ import annotations

from dataclasses import dataclass

from roost.storage.database import Database, Txn, like_escape


@dataclass(frozen=True)
class Report:
    report_id: int
    kind: str  # event, room or user
    reporter: str
    room_id: str | None
    event_id: str | None
    target_user_id: str | None
    reason: str | None
    received_ts: int


_COLUMNS = "report_id, kind, reporter, room_id, event_id, target_user_id, reason, received_ts"


class ReportStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, kind: str, reporter: str, received_ts: int, *, room_id: str | None = None,
                  event_id: str | None = None, target_user_id: str | None = None,
                  reason: str | None = None) -> int:
        def txn_fn(txn: Txn) -> int:
            row = txn.query_one(
                "INSERT INTO reports (kind, reporter, room_id, event_id, target_user_id, reason,"
                " received_ts) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING report_id",
                (kind, reporter, room_id, event_id, target_user_id, reason, received_ts))
            assert row is not None
            return int(row[0])

        return int(await self._db.run("add_report", txn_fn))

    async def list(self, limit: int, from_id: int = 0) -> list[Report]:
        """Reports in the order they came, after `from_id`."""
        rows = await self._db.run(
            "list_reports",
            lambda t: t.query(f"SELECT {_COLUMNS} FROM reports WHERE report_id > %s"
                              " ORDER BY report_id LIMIT %s", (from_id, limit)))
        return [Report(*r) for r in rows]

    async def user_known(self, user_id: str) -> bool:
        """A local account, or a user who is in some room this server knows."""
        row = await self._db.run(
            "report_user_known",
            lambda t: t.query_one(
                "SELECT EXISTS (SELECT 1 FROM users WHERE user_id = %s)"
                " OR EXISTS (SELECT 1 FROM current_state WHERE type = 'm.room.member'"
                " AND state_key = %s)", (user_id, user_id)))
        return bool(row and row[0])


    async def page(self, kind: str, offset: int, limit: int, backwards: bool,
                   user_id: str | None = None, room_id: str | None = None
                   ) -> tuple[list[Report], int]:
        """One page of reports of a kind (newest first when `backwards`) and how many match."""
        where, args = ["kind = %s"], [kind]
        if user_id:
            where.append("reporter LIKE %s")
            args.append(f"%{like_escape(user_id)}%")
        if room_id:
            where.append("room_id = %s")
            args.append(room_id)
        clause = " AND ".join(where)
        direction = "DESC" if backwards else "ASC"

        def txn_fn(txn: Txn) -> tuple[list[Report], int]:
            total = txn.query_one(f"SELECT count(*) FROM reports WHERE {clause}", tuple(args))
            rows = txn.query(f"SELECT {_COLUMNS} FROM reports WHERE {clause}"
                             f" ORDER BY report_id {direction} LIMIT %s OFFSET %s",
                             (*args, limit, offset))
            return [Report(*r) for r in rows], int(total[0]) if total else 0

        return await self._db.run("page_reports", txn_fn)

    async def get(self, report_id: int) -> Report | None:
        row = await self._db.run("get_report", lambda t: t.query_one(
            f"SELECT {_COLUMNS} FROM reports WHERE report_id = %s", (report_id,)))
        return Report(*row) if row else None

    async def delete(self, report_id: int) -> bool:
        def txn_fn(txn: Txn) -> bool:
            txn.execute("DELETE FROM reports WHERE report_id = %s", (report_id,))
            return txn.rowcount == 1

        return bool(await self._db.run("delete_report", txn_fn))

