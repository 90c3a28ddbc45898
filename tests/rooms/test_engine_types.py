"""The engine's values: RoomHead.copy, built field by field, against dataclasses.replace."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

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


def _state_event(event_id: str, event_type: str, state_key: str) -> Any:
    return SimpleNamespace(event_id=event_id, type=event_type, state_key=state_key, redacts=None)


class LoadedStateTests(TestCase):
    """RoomHead.loaded_state: built from `loaded` once every state event is in it, and
    dropped whenever `loaded` may change (forget_loaded) or the state does (a copy)."""

    def _head(self) -> tuple[RoomHead, list[Any]]:
        create, bob, alice = (_state_event("$c", "m.room.create", ""),
                              _state_event("$z", "m.room.member", "@bob:x"),
                              _state_event("$a", "m.room.member", "@alice:x"))
        events = {("m.room.create", ""): create, ("m.room.member", "@bob:x"): bob,
                  ("m.room.member", "@alice:x"): alice}
        h = RoomHead(KNOWN_ROOM_VERSIONS["11"], {k: e.event_id for k, e in events.items()},
                     events, ["$z"], 3, 1, 1)
        return h, [create, alice, bob]

    def test_built_when_every_state_event_is_loaded(self) -> None:
        h, (create, alice, bob) = self._head()
        self.assertIsNone(h.loaded_state())
        h.loaded = {"$c": LoadedEvent(create, 1, None, False), "$a": LoadedEvent(alice, 3, None, False)}
        self.assertIsNone(h.loaded_state())  # bob's not loaded yet
        h.loaded["$z"] = LoadedEvent(bob, 2, None, False)
        whole = h.loaded_state()
        assert whole is not None
        self.assertEqual([e.event.event_id for e in whole.in_key_order], ["$c", "$a", "$z"])
        self.assertEqual([e.event.event_id for e in whole.members_by_id], ["$a", "$z"])
        self.assertEqual(whole.last_position, 3)
        self.assertIs(h.loaded_state(), whole)

    def test_dropped_by_forget_loaded_and_absent_from_a_copy(self) -> None:
        h, (create, alice, bob) = self._head()
        h.loaded = {e.event_id: LoadedEvent(e, 1, None, False) for e in (create, alice, bob)}
        whole = h.loaded_state()
        self.assertIsNotNone(whole)
        self.assertIsNot(h.copy().loaded_state(), whole)  # built again for the copy
        redaction = SimpleNamespace(event_id="$r", redacts="$z")
        h.forget_loaded([redaction])  # type: ignore[list-item]
        self.assertIsNone(h.loaded_state())  # bob's event must be read again
        h.loaded["$z"] = LoadedEvent(bob, 1, "$r", False)
        again = h.loaded_state()
        assert again is not None
        self.assertEqual(again.members_by_id[1].redacted_by, "$r")

    def test_kept_by_a_copy_sharing_state_and_loaded_only(self) -> None:
        """A batch of messages shares the state and `loaded` (RoomEngine._append_batch):
        the same answer, kept; any other copy builds it again; forget_loaded of events
        with no redaction (a local batch) keeps it."""
        h, events = self._head()
        h.loaded = {e.event_id: LoadedEvent(e, 1, None, False) for e in events}
        whole = h.loaded_state()
        quiet = h.copy(share_state=True, share_loaded=True)
        quiet.forget_loaded([SimpleNamespace(event_id="$m", redacts=None)])  # type: ignore[list-item]
        self.assertIs(quiet.loaded_state(), whole)
        for share_state, share_loaded in ((True, False), (False, True), (False, False)):
            self.assertIsNot(h.copy(share_state, share_loaded).loaded_state(), whole)
        quiet.forget_loaded([SimpleNamespace(event_id="$m", redacts=None)], stored=True)  # type: ignore[list-item]
        self.assertIsNot(quiet.loaded_state(), whole)
