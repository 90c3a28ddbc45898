"""The guest-access watcher: which rooms' guest access changed in a pass, from the engine's
recent local sends when it holds all of them, else from storage."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet import task
from twisted.trial.unittest import TestCase

from roost.client_api.guest_access import GuestAccessWatcher
from roost.storage.notifier import Notifier


def sent(room_id: str, event_type: str, state_key: str | None = None) -> Any:
    return SimpleNamespace(room_id=room_id, type=event_type, state_key=state_key)


class FakeQueries:
    def __init__(self, changed: list[str]) -> None:
        self.changed, self.asked, self.guests_of = changed, [], []

    async def guest_access_changes(self, after: int, upto: int) -> list[str]:
        self.asked.append((after, upto))
        return self.changed

    async def joined_guests(self, room_id: str) -> list[str]:
        self.guests_of.append(room_id)
        return []


class FakeEngine:
    def __init__(self) -> None:
        self.recent: dict[int, Any] = {}

    def recent_local_events(self, after: int, upto: int) -> list[Any] | None:
        if any(p not in self.recent for p in range(after + 1, upto + 1)):
            return None
        return [(p, self.recent[p], None) for p in range(after + 1, upto + 1)]

    async def current_state_events(self, room_id: str) -> dict[Any, Any]:
        return {}  # no m.room.guest_access: guests may not stay


class GuestAccessPassTests(TestCase):
    def _watcher(self, changed: list[str]) -> tuple[GuestAccessWatcher, FakeQueries, FakeEngine,
                                                    SimpleNamespace]:
        queries, engine, stream = FakeQueries(changed), FakeEngine(), SimpleNamespace(current=0)
        watcher = GuestAccessWatcher(queries, engine, stream, Notifier(), task.Clock())  # type: ignore[arg-type]
        return watcher, queries, engine, stream

    async def test_local_sends_held_in_memory_ask_storage_nothing(self) -> None:
        watcher, queries, engine, stream = self._watcher(["!wrong:x"])
        engine.recent = {1: sent("!a:x", "m.room.message"),
                         2: sent("!b:x", "m.room.guest_access", ""),
                         3: sent("!c:x", "m.room.guest_access", "other"),
                         4: sent("!b:x", "m.room.guest_access", "")}
        stream.current = 4
        await watcher._check()
        self.assertEqual(queries.asked, [])  # fails before: a read every pass
        self.assertEqual(queries.guests_of, ["!b:x"])
        stream.current = 5  # a position the engine does not hold (a remote event, say)
        await watcher._check()
        self.assertEqual(queries.asked, [(4, 5)])
        self.assertEqual(queries.guests_of, ["!b:x", "!wrong:x"])

    async def test_nothing_new_is_no_pass(self) -> None:
        watcher, queries, _, _ = self._watcher(["!a:x"])
        await watcher._check()
        self.assertEqual((queries.asked, queries.guests_of), ([], []))
