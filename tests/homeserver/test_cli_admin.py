"""`roost user` and `roost room`, run as real processes against a real database."""

from __future__ import annotations

import json
import os

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.homeserver import test_cli
from tests.homeserver.test_cli import ROOST, _free_port, _run
from tests.postgres_harness import fresh_database


class AdminCommandTests(TestCase):
    # Ten real processes, three of which wait out the session cache's 5 s (a command
    # beside a running server cannot tell it): over a minute on a loaded 2-core machine.
    timeout = 400

    async def _folder(self) -> str:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        dsn = await fresh_database(self)
        await threads.deferToThread(test_cli.CliTests._generate, self, folder, _free_port(), dsn)
        return folder

    async def roost(self, folder: str, *args: str):
        return await threads.deferToThread(_run, ROOST + list(args), folder)

    async def test_users_listed_shown_promoted_reset_and_deactivated(self) -> None:
        folder = await self._folder()
        for name in ("alice", "bob"):
            made = await self.roost(folder, "register-user", "--user", name, "--password", "pw")
            self.assertEqual(made.returncode, 0, made.stderr)
        listed = await self.roost(folder, "user", "list")
        self.assertEqual(listed.stdout.splitlines(),
                         ["@alice:cli.test", "@bob:cli.test", "2 of 2 users"], listed.stderr)
        promoted = await self.roost(folder, "user", "set-admin", "alice", "true")
        self.assertEqual(promoted.returncode, 0, promoted.stderr)
        shown = json.loads((await self.roost(folder, "user", "show", "@alice:cli.test")).stdout)
        self.assertEqual((shown["name"], shown["admin"]), ("@alice:cli.test", True))
        reset = await self.roost(folder, "user", "reset-password", "bob", "--password", "pw2")
        self.assertEqual(reset.returncode, 0, reset.stderr)
        gone = await self.roost(folder, "user", "deactivate", "bob")
        self.assertEqual(gone.returncode, 0, gone.stderr)
        listed = await self.roost(folder, "user", "list")
        self.assertEqual(listed.stdout.splitlines(), ["@alice:cli.test  (admin)", "1 of 1 users"])
        unknown = await self.roost(folder, "user", "show", "nobody")
        self.assertEqual(unknown.returncode, 1)
        self.assertIn("User not found", unknown.stderr)

    async def test_rooms_listed_and_shut_down(self) -> None:
        folder = await self._folder()
        listed = await self.roost(folder, "room", "list")
        self.assertEqual(listed.stdout.splitlines(), ["0 of 0 rooms"], listed.stderr)
        missing = await self.roost(folder, "room", "shutdown", "!nope:cli.test")
        self.assertEqual(missing.returncode, 1)
        self.assertIn("no room", missing.stderr)
