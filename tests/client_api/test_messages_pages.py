"""/messages and /context answer as they did before their pages were prepared statements.

The page query (storage/room_pages.py `_stream_rows`) became a prepared statement with a
generic plan and a rewritten room condition (`room_id = ANY(ARRAY[...])`, ordered by
room then position) so that PostgreSQL plans it once and well. Those changes must not
change one answer: here every page of a room with redactions, relations, history
visibility changes, members who joined late or left, state and custom events is read
through every combination of direction, filter, limit and token, once with the
prepared statement and once with the page query as it was written before (kept below,
run plainly), and the two answers must be the same. The same holds for the reader's
membership history, read with the page as one JSON text instead of three columns.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import TestCase

import roost.storage.room_pages as pages_module
from roost.storage.events import StoredEvent
from tests.client_api.test_rooms_http import Client, start_users
from tests.server_harness import q


def _reference_stream_rows(
    txn: Any, room_id: str, from_pos: int, to_pos: int | None, backwards: bool, limit: int,
    types: list[str] | None, not_types: list[str] | None, extra: str = "",
    extra_args: list[Any] | None = None,
) -> list[tuple[Any, ...]]:
    """The page query before it was prepared (main e9a1f6e), run as plain SQL."""
    op, order = ("<", "DESC") if backwards else (">", "ASC")
    clauses = [f"e.stream_ordering {op} %s", "e.room_id = %s", "e.rejected_reason IS NULL",
               "NOT e.soft_failed"]
    args: list[Any] = [room_id, *(extra_args or ()), from_pos, room_id]
    if to_pos is not None:
        clauses.append("e.stream_ordering " + (">= %s" if backwards else "<= %s"))
        args.append(to_pos)
    if types:
        clauses.append("e.type = ANY(%s)")
        args.append(types)
    if not_types:
        clauses.append("NOT (e.type = ANY(%s))")
        args.append(not_types)
    args.append(limit)
    return txn.query(
        f"SELECT {pages_module._ROOM_EVENT_COLUMNS}, (SELECT array_agg(DISTINCT x.rel_type)"
        "  FROM event_relations x WHERE x.relates_to_id = e.event_id)"
        f"{extra} FROM events e"
        f" WHERE {' AND '.join(clauses)} ORDER BY e.stream_ordering {order} LIMIT %s",
        args,
    )


def _reference_room_page(
    txn: Any, room_id: str, from_pos: int, to_pos: int | None, backwards: bool, limit: int,
    types: list[str] | None, not_types: list[str] | None, reader: str,
) -> tuple[list[Any], tuple[bool, list[tuple[int, str]]]]:
    """The page with the reader's history before it was one JSON column (main e9a1f6e)."""
    extra = (", EXISTS (SELECT 1 FROM forgotten_rooms f WHERE f.user_id = %s"
             "  AND f.room_id = %s),"
             " ARRAY (SELECT m.stream_ordering FROM room_memberships m"
             "  WHERE m.room_id = %s AND m.user_id = %s ORDER BY m.stream_ordering, m.membership),"
             " ARRAY (SELECT m.membership FROM room_memberships m"
             "  WHERE m.room_id = %s AND m.user_id = %s ORDER BY m.stream_ordering, m.membership)")
    rows = _reference_stream_rows(txn, room_id, from_pos, to_pos, backwards, limit, types,
                                  not_types, extra,
                                  [reader, room_id, room_id, reader, room_id, reader])
    page = [StoredEvent(*row[:9], frozenset(row[9] or ())) for row in rows]
    if not rows:
        return page, (False, [])
    forgotten, positions, memberships = rows[0][10:13]
    return page, (bool(forgotten), list(zip(positions, memberships, strict=True)))


def _without_ages(value: Any) -> Any:
    """An answer without `unsigned.age` (the only part that changes between two reads)."""
    if isinstance(value, dict):
        return {k: _without_ages(v) for k, v in value.items() if k != "age"}
    if isinstance(value, list):
        return [_without_ages(v) for v in value]
    return value


FILTERS: list[dict[str, Any] | None] = [
    None,
    {"types": ["m.room.message"]},
    {"not_types": ["m.room.member", "m.reaction"]},
    {"types": ["m.room.message", "org.example.ping"], "not_types": ["org.example.ping"]},
    {"types": ["m.room.*"]},  # a wildcard: matched by Roost over batches of the stream
    {"not_types": ["m.*"]},
    {"lazy_load_members": True, "types": ["m.room.message", "m.reaction"]},
]


async def _walk(client: Client, room: str, direction: str, limit: int,
                filt: dict[str, Any] | None, start: str | None = None,
                to: str | None = None) -> list[Any]:
    """Every page from `start` (or the room's end) until one comes without `end`."""
    pages: list[Any] = []
    token = start
    while len(pages) < 60:
        args: dict[str, Any] = {"dir": direction, "limit": limit}
        if token is not None:
            args["from"] = token
        if to is not None:
            args["to"] = to
        if filt is not None:
            args["filter"] = json.dumps(filt)
        page = await client.messages(room, **args)
        pages.append(page)
        if "end" not in page or not page["chunk"]:
            break
        token = page["end"]
    return pages


class PreparedPagesAnswerAsBeforeTests(TestCase):
    async def _room(self) -> tuple[list[Client], str, dict[str, str]]:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol")
        room = await alice.create_room(preset="public_chat", initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "shared"}}])
        marks: dict[str, str] = {}
        first = await alice.send(room, "shared 0")
        await alice.send(room, "shared 1")
        await alice.send(room, event_type="m.reaction", content={
            "m.relates_to": {"rel_type": "m.annotation", "event_id": first, "key": "+1"}})
        await alice.send(room, content={"msgtype": "m.text", "body": "in thread", "m.relates_to": {
            "rel_type": "m.thread", "event_id": first}})
        doomed = await alice.send(room, "to be redacted")
        await alice.ok("PUT", f"/rooms/{q(room)}/redact/{q(doomed)}/r1", {"reason": "oops"})
        await alice.send(room, event_type="org.example.ping", content={"p": 1})
        marks["middle"] = (await alice.messages(room, limit=1))["start"]
        await alice.put_state(room, "m.room.history_visibility", {"history_visibility": "joined"})
        await alice.send(room, "joined era 0")
        await bob.join(room)
        await carol.join(room)
        await alice.send(room, "member era 0")
        await alice.put_state(room, "m.room.topic", {"topic": "a topic"})
        await carol.send(room, "carol here")
        await carol.leave(room)
        for i in range(5):
            await bob.send(room, f"member era {i + 1}")
        await alice.send(room, event_type="m.reaction", content={
            "m.relates_to": {"rel_type": "m.annotation", "event_id": first, "key": "x"}})
        return [alice, bob, carol], room, marks

    async def _answers(self, clients: list[Client], room: str, marks: dict[str, str]) -> list[Any]:
        answers: list[Any] = []
        for client in clients:
            for filt in FILTERS:
                for limit in (1, 4, 100):
                    back = await _walk(client, room, "b", limit, filt)
                    answers.append(back)
                    answers.append(await _walk(client, room, "f", limit, filt))
                    if len(back) > 1:  # forwards from a backwards page's end token
                        answers.append(await _walk(client, room, "f", limit, filt,
                                                   start=back[0]["end"]))
                    answers.append(await _walk(client, room, "b", limit, filt, to=marks["middle"]))
                    answers.append(await _walk(client, room, "f", limit, filt,
                                               start=marks["middle"]))
            for event_id in {e["event_id"] for p in answers[-5:] for e in p[0]["chunk"][:3]}:
                answers.append(await client.call(
                    "GET", f"/rooms/{q(room)}/context/{q(event_id)}?limit=6"))
        return _without_ages([a.body if hasattr(a, "body") else a for a in answers])

    async def test_every_page_answers_as_the_plain_query_did(self) -> None:
        clients, room, marks = await self._room()
        prepared = await self._answers(clients, room, marks)
        self.patch(pages_module, "_stream_rows", _reference_stream_rows)
        self.patch(pages_module, "_room_page", _reference_room_page)
        before = await self._answers(clients, room, marks)
        self.assertEqual(len(prepared), len(before))
        for got, expected in zip(prepared, before, strict=True):
            self.assertEqual(got, expected)
        # Not vacuous: the answers hold a redacted event, relations, and hidden history.
        text = json.dumps(prepared)
        self.assertIn('"redacted_because"', text)
        self.assertIn('"m.relations"', text)
        alice, bob, carol = clients
        seen = {c.user_id: [e.get("content", {}).get("body") for p in await _walk(c, room, "b", 100, None)
                            for e in p["chunk"] if e["type"] == "m.room.message"]
                for c in clients}
        self.assertIn("joined era 0", seen[alice.user_id])
        self.assertNotIn("joined era 0", seen[bob.user_id])  # before bob joined, "joined" era
        self.assertIn("shared 1", seen[bob.user_id])
        self.assertIn("member era 5", seen[bob.user_id])
        self.assertNotIn("member era 5", seen[carol.user_id])  # after carol left
