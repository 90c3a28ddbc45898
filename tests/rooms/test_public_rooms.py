"""The public room directory's pure part: entries, the search and the pages."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from roost.rooms.public_rooms import BadDirectoryQuery, directory_entry, page, parse_query


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

    def test_search_and_pages(self) -> None:
        rooms = [{"room_id": f"!{i}:x", "name": f"room {i}", "topic": "cats" if i % 2 else "dogs"}
                 for i in range(5)]
        first = page(rooms, None, None, 2)
        self.assertEqual([r["room_id"] for r in first["chunk"]], ["!0:x", "!1:x"])
        self.assertEqual(first["next_batch"], "p2")
        second = page(rooms, None, first["next_batch"], 2)
        self.assertEqual((second["prev_batch"], second["next_batch"]), ("p0", "p4"))
        cats = page(rooms, "CATS", None, None)
        self.assertEqual([r["room_id"] for r in cats["chunk"]], ["!1:x", "!3:x"])
        self.assertNotIn("next_batch", cats)

    def test_bad_queries(self) -> None:
        for body in ({"limit": "3"}, {"limit": True}, {"since": 4}, {"filter": ["x"]}):
            with self.assertRaises(BadDirectoryQuery):
                parse_query(body, None, None)
        self.assertEqual(parse_query({"filter": {"generic_search_term": "x"}}, 5, "p1"),
                         (5, "p1", "x"))
