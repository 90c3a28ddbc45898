"""Dependencies point one way, as docs/architecture.md (and DESIGN.md) draw them."""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import TestCase

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "roost")

ALLOWED = {
    "homeserver": {"admin", "appservice", "client_api", "federation", "rooms", "keys",
                   "storage", "http", "media", "push"},
    # The admin API sits beside the client API on the same JSON resource and account rules.
    "admin": {"client_api", "media", "rooms", "storage", "http"},
    "client_api": {"appservice", "federation", "push", "rooms", "keys", "storage", "http"},
    "appservice": {"rooms", "storage", "http"},
    "federation": {"rooms", "keys", "storage", "http"},
    # Push rules, their evaluation off the events stream, pushers (DESIGN.md's push/).
    "push": {"rooms", "storage"},
    "rooms": {"storage"},
    "keys": {"storage"},
    "media": {"keys", "storage", "http"},  # files, thumbnails, media endpoints
    "storage": set(),
    "http": set(),  # JSON over HTTP for both listeners: errors, routing, bodies
}
# The pure room core: no Twisted, no SQL, nothing else of roost (the engine and its
# helper modules are the rooms package's one door to storage).
IMPURE_ROOM_MODULES = {"engine", "engine_types", "event_reader", "remote_ingest", "remote_jobs",
                       "append_queue", "local_build", "access", "repeated_sends"}


def _imports(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules() -> list[tuple[str, str, str]]:
    """(package, module name, path) of every module under roost/."""
    result = []
    for package in ALLOWED:
        for folder, _dirs, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    result.append((package, name[:-3], os.path.join(folder, name)))
    return result


class LayerTests(TestCase):
    def test_imports_point_only_down(self) -> None:
        wrong = []
        for package, _name, path in _modules():
            for imported in _imports(path):
                parts = imported.split(".")
                if parts[0] != "roost" or len(parts) < 2 or parts[1] == package:
                    continue
                if parts[1] not in ALLOWED[package]:
                    wrong.append(f"{os.path.relpath(path, ROOT)} imports {imported}")
        self.assertEqual(wrong, [])

    def test_pure_room_core_imports_no_twisted_no_sql_and_no_roost(self) -> None:
        wrong = []
        for package, name, path in _modules():
            if package != "rooms" or name in IMPURE_ROOM_MODULES:
                continue
            for imported in _imports(path):
                top = imported.split(".")[0]
                outside = imported.startswith("roost.") and not imported.startswith("roost.rooms")
                if top in ("twisted", "psycopg2", "txredisapi", "treq") or outside:
                    wrong.append(f"rooms/{name}.py imports {imported}")
        self.assertEqual(wrong, [])

    def test_sql_driver_only_in_storage(self) -> None:
        wrong = [
            f"{package}/{name}.py"
            for package, name, path in _modules()
            if package != "storage" and any(i.split(".")[0] == "psycopg2" for i in _imports(path))
        ]
        self.assertEqual(wrong, [])
