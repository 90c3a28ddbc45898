"""PushActionStore's array literal: what PostgreSQL reads back is the list of ids given,
whatever characters the ids hold."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from roost.storage.database import Database
from roost.storage.push import text_array
from tests.postgres_harness import fresh_database


class TextArrayTests(TestCase):
    async def _read_back(self, values: list[str]) -> list[str]:
        db = Database(reactor, await fresh_database(self), 1, 2)
        self.addCleanup(db.close)
        row = await db.run("read", lambda txn: txn.query_one(
            "SELECT %s::text[]", (text_array(values),)))
        assert row is not None
        return list(row[0])

    async def test_plain_ids_round_trip(self) -> None:
        ids = [f"@user{n}:example.org" for n in range(50)]
        self.assertEqual(await self._read_back(ids), ids)

    async def test_quotes_backslashes_commas_and_braces_round_trip(self) -> None:
        ids = ['@a"b:hs', "@c\\d:hs", "@e,f:hs", "@{g}:hs", "@ h :hs", "@plain:hs", ""]
        self.assertEqual(await self._read_back(ids), ids)

    async def test_an_empty_list_is_an_empty_array(self) -> None:
        self.assertEqual(await self._read_back([]), [])
