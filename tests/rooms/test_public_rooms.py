"""The public room directory's pure part: entries, the search and the pages."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from roost.rooms.public_rooms import (
    MAX_PAGE,
    BadDirectoryQuery,
    cut_page,
    directory_entry,
    page_window,
    parse_query,
)


class PublicRoomsTests(TestCase):
    def test_entry_reads_the_directory_state(self) -> None:
        entry = directory_entry("!r:x", 3, {
            "m.room.name": {"name": "Lobby"}, "m.room.topic": {"topic": 5},
            "m.room.join_rules": {"join_rule": "public"},
            "m.room.history_visibility": {"history_visibility": "world_readable"},
            "m.room.create": {"type": "m.space"},
        })
        self.assertEqual(entry, {"room_id": "!r:x", "num_joined_members": 3, "name": "Lobby",
                                 "world_readable": True, "guest_can_join": False,
                                 "join_rule": "public", "room_type": "m.space"})

    def test_page_windows_are_capped_and_tokens_follow_the_total(self) -> None:
        self.assertEqual(page_window(None, None), (0, 100))
        self.assertEqual(page_window("p40", 10), (40, 10))
        self.assertEqual(page_window("p3", 10**9), (3, MAX_PAGE))
        self.assertEqual(page_window("nonsense", 5), (0, 5))
        rooms = [{"room_id": f"!{i}:x"} for i in range(2)]
        first = cut_page(rooms, 0, 2, 5)
        self.assertEqual((first["next_batch"], first["total_room_count_estimate"]), ("p2", 5))
        self.assertNotIn("prev_batch", first)
        last = cut_page(rooms[:1], 4, 2, 5)
        self.assertEqual(last["prev_batch"], "p2")
        self.assertNotIn("next_batch", last)

    def test_bad_queries(self) -> None:
        for body in ({"limit": "3"}, {"limit": True}, {"since": 4}, {"filter": ["x"]}):
            with self.assertRaises(BadDirectoryQuery):
                parse_query(body, None, None)
        self.assertEqual(parse_query({"filter": {"generic_search_term": "x"}}, 5, "p1"),
                         (5, "p1", "x"))
