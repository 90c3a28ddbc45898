"""The in-memory unread counts: kept exact across batches, receipts and racing reads."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from roost.push.counts import UnreadCache

BOB, CAROL, ROOM = "@bob:t", "@carol:t", "!r:t"


def row(position: int, users: list[str], thread: str = "main", highlight: bool = False) -> tuple:
    return (position, 0, ROOM, f"$e{position}", thread, '["notify"]', highlight, 0, users)


class UnreadCacheTests(TestCase):
    def test_batches_add_to_held_entries_only(self) -> None:
        cache = UnreadCache()
        cache.put(BOB, {ROOM: {"main": (1, 0)}}, [ROOM], cache.generation)
        cache.writing()
        cache.add([row(2, [BOB, CAROL]), row(3, [BOB], "$root", True)])
        found, missing = cache.get(BOB, [ROOM])
        self.assertEqual((found, missing), ({ROOM: {"main": (2, 0), "$root": (1, 1)}}, []))
        self.assertEqual(cache.get(CAROL, [ROOM]), ({}, [ROOM]))

    def test_a_read_that_raced_a_batch_or_a_receipt_is_not_kept(self) -> None:
        cache = UnreadCache()
        generation = cache.generation
        cache.writing()
        cache.put(BOB, {}, [ROOM], cache.generation)  # read while a batch was being stored
        self.assertEqual(cache.get(BOB, [ROOM])[1], [ROOM])
        cache.add([row(2, [BOB])])
        cache.put(BOB, {}, [ROOM], generation)  # started before the batch
        self.assertEqual(cache.get(BOB, [ROOM])[1], [ROOM])
        generation = cache.generation
        cache.drop([(CAROL, ROOM)])  # any receipt meanwhile
        cache.put(BOB, {}, [ROOM], generation)
        self.assertEqual(cache.get(BOB, [ROOM])[1], [ROOM])

    def test_receipts_own_events_and_failures_drop_entries(self) -> None:
        cache = UnreadCache()
        cache.put(BOB, {ROOM: {"main": (4, 1)}}, [ROOM], cache.generation)
        cache.drop([(BOB, ROOM)])
        self.assertEqual(cache.get(BOB, [ROOM])[1], [ROOM])
        cache.put(BOB, {}, [ROOM], cache.generation)
        cache.writing()
        cache.add([], senders=[(BOB, ROOM)])  # bob sent something: he read the room
        self.assertEqual(cache.get(BOB, [ROOM])[1], [ROOM])
        cache.put(BOB, {}, [ROOM], cache.generation)
        cache.writing()
        cache.clear()  # the batch's transaction failed
        self.assertEqual(len(cache), 0)

    def test_the_cache_is_bounded(self) -> None:
        cache = UnreadCache(max_entries=2)
        for user in ("@a:t", "@b:t", "@c:t"):
            cache.put(user, {}, [ROOM], cache.generation)
        self.assertEqual(len(cache), 2)
        self.assertEqual(cache.get("@a:t", [ROOM])[1], [ROOM])
