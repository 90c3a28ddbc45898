"""The engine's values: RoomHead.copy, built field by field, against dataclasses.replace."""

from __future__ import annotations

import dataclasses

from twisted.trial.unittest import TestCase

from roost.rooms.engine_types import LoadedEvent, RoomHead
from roost.rooms.versions import KNOWN_ROOM_VERSIONS


def head() -> RoomHead:
    h = RoomHead(KNOWN_ROOM_VERSIONS["11"], {("m.room.create", ""): "$c"}, {}, ["$x"], 7, 3, 2,
                 visibility=[(1, "shared")], loaded={"$c": LoadedEvent(None, 1, None, False)})  # type: ignore[arg-type]
    h.state_by_id()
    h.sorted_state()
    return h


class RoomHeadCopyTests(TestCase):
    def test_a_copy_is_what_replace_makes(self) -> None:
        """Every field a new RoomHead takes is carried over (a field added to the class
        and not to `copy` fails here); the fields built on first use start empty."""
        original = head()
        for share_state in (False, True):
            for share_loaded in (False, True):
                copied = original.copy(share_state, share_loaded)
                expected = dataclasses.replace(original)
                for f in dataclasses.fields(RoomHead):
                    self.assertEqual(getattr(copied, f.name), getattr(expected, f.name), f.name)

    def test_what_is_shared_and_what_is_copied(self) -> None:
        original = head()
        copied = original.copy()
        self.assertIsNot(copied.state, original.state)
        self.assertIsNot(copied.state_events, original.state_events)
        self.assertIsNot(copied.loaded, original.loaded)
        self.assertIsNot(copied.extremities, original.extremities)
        shared = original.copy(share_state=True, share_loaded=True)
        self.assertIs(shared.state, original.state)
        self.assertIs(shared.state_events, original.state_events)
        self.assertIs(shared.loaded, original.loaded)
        self.assertIsNot(shared.extremities, original.extremities)
        self.assertIs(shared.visibility, original.visibility)
