"""Stream positions and their announcements; the notifier's order; the user-rooms cache."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from roost.storage.notifier import Notifier, StreamChange
from roost.storage.room_state import UserRoomsCache
from roost.storage.streams import StreamIdGenerator


class StreamAnnouncementTests(TestCase):
    def _stream(self) -> tuple[StreamIdGenerator, list[StreamChange]]:
        notifier = Notifier()
        heard: list[StreamChange] = []
        notifier.add_listener(heard.append)
        return StreamIdGenerator(10, "events", notifier), heard

    def test_a_write_finishing_early_is_announced_only_when_readable(self) -> None:
        stream, heard = self._stream()
        first, second = stream.allocate(1), stream.allocate(1)
        stream.finish(second, rooms=["!b"], users=["@b"])
        self.assertEqual((stream.current, heard), (10, []))
        stream.finish(first, rooms=["!a"])
        self.assertEqual(heard, [StreamChange("events", 12, frozenset({"!a", "!b"}),
                                              frozenset({"@b"}))])

    def test_writes_still_hidden_stay_held_for_their_own_announcement(self) -> None:
        stream, heard = self._stream()
        a, b, c = stream.allocate(1), stream.allocate(1), stream.allocate(1)
        stream.finish(c, rooms=["!c"])
        stream.finish(a, rooms=["!a"])  # readable up to a only: c is still behind b
        self.assertEqual([(h.position, h.rooms) for h in heard], [(11, frozenset({"!a"}))])
        stream.finish(b)
        self.assertEqual([(h.position, h.rooms) for h in heard][1:], [(13, frozenset({"!c"}))])

    def test_an_abandoned_write_announces_nothing_of_its_own(self) -> None:
        stream, heard = self._stream()
        stream.finish(stream.allocate(2))
        self.assertEqual([(h.position, h.rooms, h.users) for h in heard],
                         [(12, frozenset(), frozenset())])


class NotifierOrderTests(TestCase):
    def test_caches_hear_of_a_change_before_any_reader(self) -> None:
        notifier = Notifier()
        order: list[str] = []
        for i in range(20):
            notifier.add_listener(lambda c, i=i: order.append(f"reader{i}"))
        notifier.add_cache(lambda c: order.append("cache"))
        notifier.notify("events", 1)
        self.assertEqual(order[0], "cache")
        self.assertEqual(order[1:], [f"reader{i}" for i in range(20)])


class _Store:
    """Membership storage whose reads the test answers by hand."""

    def __init__(self) -> None:
        self.loads: list[defer.Deferred[tuple[dict[str, str], int]]] = []
        self.at: list[int] = []

    def rooms_for_user_with_newest(self, user: str, memberships: Any) -> Any:
        d: defer.Deferred[tuple[dict[str, str], int]] = defer.Deferred()
        self.loads.append(d)
        return d

    async def rooms_for_user_at(self, user: str, position: int) -> dict[str, str]:
        self.at.append(position)
        return {"!r": "join"}


class UserRoomsCacheTests(TestCase):
    async def test_a_load_racing_a_change_is_not_kept(self) -> None:
        store = _Store()
        cache = UserRoomsCache(store)  # type: ignore[arg-type]
        loading = defer.ensureDeferred(cache.rooms("@u"))
        cache.on_change(StreamChange("events", 5, frozenset({"!r"}), frozenset({"@u"})))
        store.loads[0].callback(({"!r": "join"}, 4))  # read before the kick committed
        self.assertEqual(await loading, {"!r": "join"})
        again = defer.ensureDeferred(cache.rooms("@u"))
        self.assertEqual(len(store.loads), 2)  # not served from the stale load
        store.loads[1].callback(({"!r": "leave"}, 5))
        self.assertEqual(await again, {"!r": "leave"})

    async def test_an_entry_ahead_of_the_token_reads_memberships_at_the_token(self) -> None:
        store = _Store()
        cache = UserRoomsCache(store)  # type: ignore[arg-type]
        loading = defer.ensureDeferred(cache.rooms_at("@u", 7))
        store.loads[0].callback(({"!r": "leave"}, 9))  # a kick at 9 committed, not yet readable
        self.assertEqual(await loading, {"!r": "join"})
        self.assertEqual(store.at, [7])
        self.assertEqual(await cache.rooms_at("@u", 9), {"!r": "leave"})
        self.assertEqual(store.at, [7])
