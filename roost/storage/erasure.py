"""Erased users (deactivated with ``erase: true``): recorded once, asked about per page.

``erased_among`` answers for a batch of senders in one query, and only for this
server's users (an erasure is the user's own server's to make), so serving events
of remote senders costs no query at all.
"""

from __future__ import annotations

from collections.abc import Iterable

from roost.storage.database import Database


class ErasureStore:
    def __init__(self, db: Database, server_name: str) -> None:
        self._db = db
        self._suffix = ":" + server_name

    async def erase(self, user_id: str, now_ms: int) -> None:
        await self._db.run(
            "erase_user",
            lambda t: t.execute(
                "INSERT INTO erased_users (user_id, erased_ts) VALUES (%s, %s)"
                " ON CONFLICT (user_id) DO NOTHING", (user_id, now_ms)))

    async def erased_among(self, user_ids: Iterable[str]) -> set[str]:
        local = sorted({u for u in user_ids if u.endswith(self._suffix)})
        if not local:
            return set()
        rows = await self._db.run(
            "erased_among",
            lambda t: t.query("SELECT user_id FROM erased_users WHERE user_id = ANY(%s)",
                              (local,)))
        return {r[0] for r in rows}
