"""Event reports under /_synapse/admin/v1/event_reports: list, read and delete the
reports users made (POST /rooms/{roomId}/report/{eventId}), with the room's name
and alias and the reported event, as synapse-admin's reports screen shows them."""

from __future__ import annotations

import functools
from typing import Any

from roost.admin.auth import ADMIN_PREFIX, AdminGate, bind
from roost.admin.users import page_args
from roost.client_api.errors import invalid_param, not_found
from roost.client_api.resource import ApiRequest, JsonDict, Router
from roost.rooms.engine import RoomEngine
from roost.storage.admin_queries import AdminQueries
from roost.storage.reports import Report, ReportStore

R = f"{ADMIN_PREFIX}/v1/event_reports"


class AdminReports:
    def __init__(self, gate: AdminGate, store: ReportStore, queries: AdminQueries,
                 engine: RoomEngine) -> None:
        self.gate = gate
        self.store = store
        self.queries = queries
        self.engine = engine

    async def report_json(self, report: Report, with_event: bool = False) -> JsonDict:
        body: JsonDict = {"id": report.report_id, "received_ts": report.received_ts,
                          "room_id": report.room_id, "event_id": report.event_id,
                          "user_id": report.reporter}
        if report.reason is not None:
            body["reason"] = report.reason
        summary = await self.queries.room(report.room_id) if report.room_id else None
        for name in ("name", "canonical_alias"):
            if summary is not None and summary.get(name) is not None:
                body[name] = summary[name]
        loaded = (await self.engine.get_events([report.event_id])).get(report.event_id) \
            if report.event_id else None
        if loaded is not None:
            body["sender"] = loaded.event.sender
            if with_event:
                body["event_json"] = dict(loaded.event.pdu)
        return body


def _report_id(req: ApiRequest) -> int:
    raw = req.params["report_id"]
    if not raw.isdigit():
        raise invalid_param("report_id must be a positive integer")
    return int(raw)


async def list_reports(reports: AdminReports, req: ApiRequest) -> JsonDict:
    await reports.gate.require_admin(req)
    offset, limit, _forwards = page_args(req)
    backwards = req.arg("dir", "b") == "b"  # newest first unless dir=f
    found, total = await reports.store.page("event", offset, limit, backwards,
                                            user_id=req.arg("user_id"),
                                            room_id=req.arg("room_id"))
    body: JsonDict = {"event_reports": [await reports.report_json(r) for r in found],
                      "total": total}
    if offset + len(found) < total:
        body["next_token"] = offset + len(found)
    return body


async def get_report(reports: AdminReports, req: ApiRequest) -> JsonDict:
    await reports.gate.require_admin(req)
    report = await reports.store.get(_report_id(req))
    if report is None or report.kind != "event":
        raise not_found("No such event report")
    return await reports.report_json(report, with_event=True)


async def delete_report(reports: AdminReports, req: ApiRequest) -> JsonDict:
    await reports.gate.require_admin(req)
    report = await reports.store.get(_report_id(req))
    if report is None or report.kind != "event" or not await reports.store.delete(
            report.report_id):
        raise not_found("No such event report")
    return {}


def register(router: Router, reports: AdminReports) -> None:
    bound: Any = functools.partial(bind, reports)
    router.add("GET", R, bound(list_reports))
    router.add("GET", f"{R}/{{report_id}}", bound(get_report))
    router.add("DELETE", f"{R}/{{report_id}}", bound(delete_report))
