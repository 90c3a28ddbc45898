"""What the tests comparing /sync's answer paths share: a clock that moves only when a test
advances it (so every path serves the same ages) and a client call that must succeed."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from roost.client_api.sync_filter import DEFAULT_FILTER
from tests.server_harness import RunningServer, q, start_server

V3 = "/_matrix/client/v3"


def frozen_clock() -> task.Clock:
    """Served ages move only when the test advances it: every path serves the same ages."""
    clock = task.Clock()
    clock.advance(reactor.seconds())  # type: ignore[attr-defined]
    return clock


async def call(server: RunningServer, method: str, path: str, token: str,
               body: Any = None) -> Any:
    """`method path` (under /_matrix/client/v3) as the token's user; its body, which must be
    a 200's."""
    resp = await server.request(method, V3 + path, body if body is not None else {},
                                token=token)
    assert resp.status == 200, (path, resp.status, resp.body)
    return resp.body


async def mixed_rooms(case: TestCase) -> tuple[RunningServer, dict[str, Any], list[str]]:
    """A server on a frozen clock where five users meet in three public rooms of alice's in
    different ways: dave is not in the third, erin left it, carol ignores bob; each user has
    had an initial sync (so ignored users are known). Returns (server, users by name,
    rooms)."""
    server = await start_server(case, clock=frozen_clock())
    users = {name: await server.register(name)
             for name in ("alice", "bob", "carol", "dave", "erin")}
    alice = users["alice"]["access_token"]
    rooms = [(await call(server, "POST", "/createRoom", alice,
                         {"preset": "public_chat"}))["room_id"] for _ in range(3)]
    for name in ("bob", "carol", "dave", "erin"):
        for room in rooms[:2] if name == "dave" else rooms:
            await call(server, "POST", f"/rooms/{q(room)}/join", users[name]["access_token"])
    await call(server, "POST", f"/rooms/{q(rooms[2])}/leave", users["erin"]["access_token"])
    await call(server, "PUT", f"/user/{q('@carol:test.roost')}/account_data/"
               "m.ignored_user_list", users["carol"]["access_token"],
               {"ignored_users": {"@bob:test.roost": {}}})
    builder = server.hs.sync_builder
    assert builder is not None
    for user in users.values():
        await builder.build(user["user_id"], None, DEFAULT_FILTER, device_id=user["device_id"])
    return server, users, rooms
