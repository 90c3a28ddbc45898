"""A woken receiver's rooms served straight from the shared parts (SyncBuilder._news_rooms
with `_serve_directly`, and the range's events grouped once, sync_news.NewsWindow) must give
byte for byte the body the serializer's path gives, and the rooms the general path gives,
for receivers with different filters, ignore lists, memberships and own events."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from roost.client_api.sync_extensions import SyncRequest
from roost.client_api.sync_filter import DEFAULT_FILTER, SyncFilter
from roost.http.bodies import encode_json
from tests.client_api.sync_helpers import call as _call
from tests.client_api.sync_helpers import mixed_rooms
from tests.server_harness import q

FILTERS: list[Any] = [
    None,
    {"room": {"timeline": {"limit": 1}}},
    {"room": {"timeline": {"not_types": ["m.room.name"]}}},
    {"room": {"timeline": {"senders": ["@bob:test.roost"]}}},
    {"event_fields": ["content.body", "type", "sender"]},
    {"event_format": "federation"},
    {"room": {"state": {"lazy_load_members": True}}},
    {"room": {"rooms": ["ROOM1"]}},
    {"room": {"not_rooms": ["ROOM1"]}},
]


class DirectServingTests(TestCase):
    async def test_direct_answers_equal_the_serializer_s_and_the_general_path_s(self) -> None:
        server, users, rooms = await mixed_rooms(self)
        alice = users["alice"]["access_token"]
        builder = server.hs.sync_builder
        assert builder is not None

        direct: list[bool] = []
        serve_directly = builder._serve_directly

        def watched(parts: Any, user_id: str) -> bool:
            result = serve_directly(parts, user_id)
            direct.append(result)
            return result

        async def compare(since: Any) -> None:
            now = builder.now()
            for name, user in users.items():
                for raw in FILTERS:
                    filt = DEFAULT_FILTER if raw is None else SyncFilter.from_json(
                        _rooms_named(raw, rooms))
                    user_id, device = user["user_id"], user["device_id"]
                    self.assertTrue(builder._quiet(user_id, since, now), name)
                    builder._serve_directly = watched
                    fast, _ = await builder.build(user_id, since, filt, device_id=device)
                    builder._serve_directly = lambda parts, user_id: False
                    slow, _ = await builder.build(user_id, since, filt, device_id=device)
                    builder._serve_directly = serve_directly
                    builder._window.forget()  # the general path reads for itself
                    memberships = await builder._user_rooms.rooms_at(user_id, now.events)
                    ignored = builder._ignored[user_id]
                    general = await builder._rooms(
                        SyncRequest(user_id, device, since, now, filt.ignoring(ignored)),
                        memberships, [], ignored)
                    self.assertEqual(encode_json(fast), encode_json(slow), (name, raw))
                    self.assertEqual(fast["rooms"], general, (name, raw))

        since = builder.now()
        for i, room in enumerate(rooms):
            await _call(server, "PUT", f"/rooms/{q(room)}/send/m.room.message/a{i}", alice,
                        {"msgtype": "m.text", "body": f"to room {i}"})
        await _call(server, "PUT", f"/rooms/{q(rooms[1])}/send/m.room.message/b1",
                    users["bob"]["access_token"], {"msgtype": "m.text", "body": "bob's"})
        await compare(since)
        self.assertIn(True, direct)  # the direct path was taken...
        self.assertIn(False, direct)  # ...and not for bob's own event (his transaction id)
        # A later range from an older `since` too, with a name change (the summary is per
        # user: not served directly) and a redaction of a message served before.
        older, since = since, builder.now()
        sent = await _call(server, "PUT", f"/rooms/{q(rooms[0])}/send/m.room.message/a9",
                           alice, {"msgtype": "m.text", "body": "to redact"})
        await _call(server, "PUT", f"/rooms/{q(rooms[2])}/state/m.room.name/", alice,
                    {"name": "renamed"})
        await _call(server, "PUT", f"/rooms/{q(rooms[0])}/redact/{q(sent['event_id'])}/x",
                    alice, {})
        await compare(since)
        await compare(older)


def _rooms_named(raw: dict[str, Any], rooms: list[str]) -> dict[str, Any]:
    """The filter with ROOM1 replaced by the second room's id."""
    text = encode_json(raw).decode().replace("ROOM1", rooms[1])
    import json
    return json.loads(text)
