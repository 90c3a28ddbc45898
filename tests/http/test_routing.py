"""The route table: templates, depth indexing, 404 against 405, HEAD by GET."""

from __future__ import annotations

import re
from dataclasses import dataclass

from twisted.trial.unittest import TestCase

from roost.http.routing import RouteTable, compile_template


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    name: str


def _table(*routes: tuple[str, str, str]) -> RouteTable[_Route]:
    table: RouteTable[_Route] = RouteTable()
    for method, path, name in routes:
        table.insert(path, _Route(method, compile_template(path), name))
    return table


class RouteTableTests(TestCase):
    def test_placeholders_match_one_segment_and_are_unquoted(self) -> None:
        table = _table(("GET", "/rooms/{room_id}/state/{event_type}", "state"))
        route, params, known = table.match("GET", "/rooms/%21a%3Ab/state/m.room.name")
        self.assertEqual((route and route.name, params, known),
                         ("state", {"room_id": "!a:b", "event_type": "m.room.name"}, True))
        self.assertEqual(table.match("GET", "/rooms/a/b/state/x"), (None, {}, False))

    def test_a_known_path_with_another_method_is_405_not_404(self) -> None:
        table = _table(("PUT", "/rooms/{room_id}/typing/{user_id}", "typing"))
        self.assertEqual(table.match("GET", "/rooms/r/typing/u"), (None, {}, True))
        self.assertEqual(table.match("GET", "/rooms/r/nope/u"), (None, {}, False))

    def test_head_is_answered_by_get_and_alternations_work(self) -> None:
        table = _table(("GET", "/_matrix/client/(?:v3|r0)/sync", "sync"))
        for method, path in (("HEAD", "/_matrix/client/v3/sync"),
                             ("GET", "/_matrix/client/r0/sync")):
            route, _, _ = table.match(method, path)
            self.assertEqual(route and route.name, "sync")

    def test_the_first_matching_route_wins(self) -> None:
        table = _table(("GET", "/profile/{user_id}/displayname", "field"),
                       ("GET", "/profile/{user_id}/{field}", "any"))
        route, _, _ = table.match("GET", "/profile/u/displayname")
        self.assertEqual(route and route.name, "field")

    def test_fixed_paths_are_remembered_and_stay_first_match(self) -> None:
        table = _table(("GET", "/sync", "sync"), ("POST", "/sync", "post_sync"))
        for _ in range(2):  # the second answer comes from the remembered match
            self.assertEqual(table.match("GET", "/sync")[0].name, "sync")  # type: ignore[union-attr]
            self.assertEqual(table.match("POST", "/sync")[0].name, "post_sync")  # type: ignore[union-attr]
            self.assertEqual(table.match("PUT", "/sync"), (None, {}, True))
        # A template with a placeholder that comes first still wins over a fixed one.
        table = _table(("GET", "/{anything}", "param"), ("GET", "/sync", "sync"))
        for _ in range(2):
            route, params, _ = table.match("GET", "/sync")
            self.assertEqual((route and route.name, params), ("param", {"anything": "sync"}))

    def test_remembered_fixed_paths_are_bounded(self) -> None:
        table = _table(("GET", "/a.b", "dotted"))  # "." matches any character
        for code in range(2000):
            route, _, _ = table.match("GET", f"/a{chr(0x4e00 + code)}b")
            self.assertEqual(route and route.name, "dotted")
        self.assertLessEqual(len(table._fixed), 1024)
