"""Profiles of local users (display name, avatar) and the user directory search.

The directory shows a searcher the users they share a joined room with, and
the users joined to a public room. It is answered by one query: the users
whose localpart or display name contains the term (index scans, see
migration 0006), narrowed to those the searcher may see (index lookups on
current_state), ranked exact match, then prefix, then substring.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from roost.storage.database import Database, Txn

# Must match the index expressions of migration 0006.
_LOCALPART = "lower(split_part(substr(u.user_id, 2), ':', 1))"
_DISPLAYNAME = "lower(p.displayname)"


@dataclass(frozen=True)
class Profile:
    displayname: str | None
    avatar_url: str | None
    # Fields beyond the two above (m.tz, custom keys): key -> any JSON value.
    fields: dict[str, Any] = field(default_factory=dict)


class ProfileTooLargeError(Exception):
    """Storing the field would make the profile larger than the limit."""


@dataclass(frozen=True)
class DirectoryEntry:
    user_id: str
    display_name: str | None
    avatar_url: str | None


class ProfileStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_profile(self, user_id: str) -> Profile | None:
        """The user's profile; None if there is no such (active) local user."""
        row = await self._db.run(
            "get_profile",
            lambda t: t.query_one(
                "SELECT p.displayname, p.avatar_url, p.fields FROM users u"
                " LEFT JOIN profiles p USING (user_id)"
                " WHERE u.user_id = %s AND NOT u.deactivated",
                (user_id,),
            ),
        )
        if not row:
            return None
        fields = row[2] if isinstance(row[2], dict) else json.loads(row[2] or "{}")
        return Profile(row[0], row[1], fields)

    async def set_custom_field(self, user_id: str, key: str, value: Any, max_bytes: int) -> None:
        """Set (or with None, remove) one extended field; ProfileTooLargeError if the whole
        profile, as JSON, would pass `max_bytes` (then nothing changes)."""

        def txn_fn(txn: Txn) -> None:
            txn.execute("INSERT INTO profiles (user_id) VALUES (%s) ON CONFLICT DO NOTHING",
                        (user_id,))
            row = txn.query_one(
                "SELECT displayname, avatar_url, fields FROM profiles WHERE user_id = %s"
                " FOR UPDATE", (user_id,))
            assert row is not None
            fields = row[2] if isinstance(row[2], dict) else json.loads(row[2] or "{}")
            if value is None:
                fields.pop(key, None)
            else:
                fields[key] = value
            whole = {**fields, "displayname": row[0], "avatar_url": row[1]}
            if len(json.dumps(whole, ensure_ascii=False).encode("utf-8")) > max_bytes:
                raise ProfileTooLargeError(key)
            txn.execute("UPDATE profiles SET fields = %s::jsonb WHERE user_id = %s",
                        (json.dumps(fields, ensure_ascii=False), user_id))

        await self._db.run("set_profile_field", txn_fn)

    async def set_displayname(self, user_id: str, displayname: str | None) -> None:
        await self._db.run("set_displayname", _upsert, user_id, "displayname", displayname)

    async def set_avatar_url(self, user_id: str, avatar_url: str | None) -> None:
        await self._db.run("set_avatar_url", _upsert, user_id, "avatar_url", avatar_url)

    async def clear(self, user_id: str) -> None:
        """Forget a profile (deactivation)."""
        await self._db.run(
            "clear_profile",
            lambda t: t.execute("DELETE FROM profiles WHERE user_id = %s", (user_id,)),
        )

    async def search_directory(
        self, searcher: str, term: str, limit: int
    ) -> tuple[list[DirectoryEntry], bool]:
        """Up to `limit` visible users matching `term`, best first, and whether more matched."""
        term = term.strip().lower()
        if not term or limit <= 0:
            return [], False
        rows = await self._db.run("search_directory", _search, searcher, term, limit + 1)
        entries = [DirectoryEntry(r[0], r[1], r[2]) for r in rows]
        return entries[:limit], len(entries) > limit


def _upsert(txn: Txn, user_id: str, column: str, value: str | None) -> None:
    # `column` is one of two names chosen by the caller above, never user input.
    assert column in ("displayname", "avatar_url")
    txn.execute(
        f"INSERT INTO profiles (user_id, {column}) VALUES (%s, %s)"
        f" ON CONFLICT (user_id) DO UPDATE SET {column} = EXCLUDED.{column}",
        (user_id, value),
    )


def _like_escape(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# `matches` gathers candidates by index (localpart or display name containing
# the term); `seen` keeps those sharing a joined room with the searcher or
# joined to a public room. Rank 0 is an exact match, 1 a prefix, 2 a substring.
_SEARCH_SQL = f"""
WITH matches AS (
    SELECT u.user_id FROM users u
    WHERE {_LOCALPART} LIKE %(contains)s AND NOT u.deactivated
    UNION
    SELECT p.user_id FROM profiles p JOIN users u USING (user_id)
    WHERE {_DISPLAYNAME} LIKE %(contains)s AND NOT u.deactivated
),
my_rooms AS (
    SELECT room_id FROM current_state
    WHERE type = 'm.room.member' AND state_key = %(searcher)s AND membership = 'join'
),
seen AS (
    SELECT m.user_id,
        EXISTS (
            SELECT 1 FROM current_state c JOIN my_rooms r USING (room_id)
            WHERE c.type = 'm.room.member' AND c.state_key = m.user_id
                AND c.membership = 'join'
        ) AS shares_room,
        EXISTS (
            SELECT 1 FROM current_state c JOIN rooms r USING (room_id)
            WHERE r.is_public AND c.type = 'm.room.member' AND c.state_key = m.user_id
                AND c.membership = 'join'
        ) AS in_public_room
    FROM matches m
)
SELECT s.user_id, p.displayname, p.avatar_url,
    CASE
        WHEN {_LOCALPART} = %(term)s OR {_DISPLAYNAME} = %(term)s THEN 0
        WHEN {_LOCALPART} LIKE %(prefix)s OR {_DISPLAYNAME} LIKE %(prefix)s THEN 1
        ELSE 2
    END AS rank
FROM seen s JOIN users u USING (user_id) LEFT JOIN profiles p USING (user_id)
WHERE s.shares_room OR s.in_public_room
ORDER BY rank, s.shares_room DESC, COALESCE({_DISPLAYNAME}, {_LOCALPART}), s.user_id
LIMIT %(limit)s
"""


def _search(txn: Txn, searcher: str, term: str, limit: int) -> list[tuple[str, str | None, str | None]]:
    escaped = _like_escape(term)
    rows = txn.query(_SEARCH_SQL, {
        "searcher": searcher, "term": term, "prefix": escaped + "%",
        "contains": "%" + escaped + "%", "limit": limit,
    })
    return [(r[0], r[1], r[2]) for r in rows]
