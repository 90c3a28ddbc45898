"""Parsed sync filters are shared by their JSON; invalid ones are refused every time."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from roost.client_api.errors import MatrixError
from roost.client_api.sync_filter import DEFAULT_FILTER, SyncFilter


class SharedFilterTests(TestCase):
    def test_same_filter_json_gives_one_shared_object(self) -> None:
        a = SyncFilter.from_json({"room": {"timeline": {"limit": 50, "types": ["m.room.*"]}},
                                  "presence": {"types": []}})
        b = SyncFilter.from_json({"presence": {"types": []},
                                  "room": {"timeline": {"types": ["m.room.*"], "limit": 50}}})
        self.assertIs(a, b)
        self.assertEqual(a.timeline_limit, 50)
        self.assertFalse(a.include_presence)

    def test_different_filters_are_not_confused(self) -> None:
        a = SyncFilter.from_json({"room": {"timeline": {"limit": 5}}})
        b = SyncFilter.from_json({"room": {"timeline": {"limit": 6}}})
        c = SyncFilter.from_json({"room": {"include_leave": True}})
        d = SyncFilter.from_json({"room": {"include_leave": False}})
        self.assertEqual((a.timeline_limit, b.timeline_limit), (5, 6))
        self.assertEqual((c.include_leave, d.include_leave), (True, False))

    def test_an_invalid_filter_is_refused_each_time(self) -> None:
        for _ in range(2):
            with self.assertRaises(MatrixError) as caught:
                SyncFilter.from_json({"room": {"timeline": {"limit": "10"}}})
            self.assertEqual((caught.exception.status, caught.exception.errcode),
                             (400, "M_BAD_JSON"))
        with self.assertRaises(MatrixError):
            SyncFilter.from_json({"room": {"timeline": {"limit": 10.0}}})  # not an integer
        with self.assertRaises(MatrixError):
            SyncFilter.from_json(["not", "an", "object"])

    def test_no_filter_is_the_default_filter(self) -> None:
        self.assertEqual(SyncFilter.from_json({}), DEFAULT_FILTER)
        self.assertEqual(DEFAULT_FILTER.timeline_limit, 10)
        self.assertTrue(DEFAULT_FILTER.timeline.passes_every_event())
