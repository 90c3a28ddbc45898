"""A real client library, matrix-nio, walks the account lifecycle against Roost.

nio runs on asyncio, so each scenario runs in a worker thread with its own
event loop while Roost serves on the reactor thread.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from nio import AsyncClient, LoginResponse, LogoutResponse, WhoamiResponse
from nio.responses import RegisterResponse
from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.server_harness import start_server


async def _account_round_trip(base_url: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    client = AsyncClient(base_url, "nio-alice")
    try:
        # nio completes the dummy stage itself (its register sends m.login.dummy).
        registered = await client.register("nio-alice", "pw-nio-1", device_name="nio laptop")
        seen["registered"] = isinstance(registered, RegisterResponse)
        seen["registered_user"] = getattr(registered, "user_id", None)
        client.access_token = ""
        login = await client.login("pw-nio-1", device_name="nio laptop")
        seen["login"] = isinstance(login, LoginResponse)
        who = await client.whoami()
        seen["whoami"] = who.user_id if isinstance(who, WhoamiResponse) else repr(who)

        # nio keeps no refresh tokens, so this login and the refresh go through
        # its raw request method, on the same client and connection pool.
        raw_login = await client.send("POST", "/_matrix/client/v3/login", json.dumps({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "nio-alice"},
            "password": "pw-nio-1",
            "refresh_token": True,
        }), headers={"Content-Type": "application/json"})
        tokens = await raw_login.json()
        client.access_token = tokens["access_token"]
        resp = await client.send(
            "POST", "/_matrix/client/v3/refresh",
            json.dumps({"refresh_token": tokens["refresh_token"]}),
            headers={"Content-Type": "application/json"},
        )
        body = await resp.json()
        seen["refresh_status"] = resp.status
        client.access_token = body["access_token"]
        who = await client.whoami()
        seen["whoami_after_refresh"] = who.user_id if isinstance(who, WhoamiResponse) else None

        out = await client.logout()
        seen["logout"] = isinstance(out, LogoutResponse)
        who = await client.whoami()
        seen["whoami_after_logout"] = getattr(who, "status_code", None)
    finally:
        await client.close()
    return seen


class NioAccountTests(TestCase):
    async def test_nio_registers_logs_in_refreshes_and_logs_out(self) -> None:
        server = await start_server(self)
        seen = await threads.deferToThread(asyncio.run, _scenario(server.base_url))
        self.assertTrue(seen["registered"])
        self.assertEqual(seen["registered_user"], "@nio-alice:test.roost")
        self.assertTrue(seen["login"])
        self.assertEqual(seen["whoami"], "@nio-alice:test.roost")
        self.assertEqual(seen["refresh_status"], 200)
        self.assertEqual(seen["whoami_after_refresh"], "@nio-alice:test.roost")
        self.assertTrue(seen["logout"])
        self.assertEqual(seen["whoami_after_logout"], "M_UNKNOWN_TOKEN")


async def _scenario(base_url: str) -> dict[str, Any]:
    return await _account_round_trip(base_url)
