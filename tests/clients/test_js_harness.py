"""The matrix-js-sdk harness itself: node runs a script against a real Roost and its
result (or its Matrix error) comes back to the trial test."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.clients.js_harness import run_js
from tests.server_harness import q, start_server


class JsHarnessTests(TestCase):
    timeout = 300

    async def test_node_client_registers_creates_a_room_and_sends_what_roost_stores(self) -> None:
        server = await start_server(self)
        run = await run_js(self, "harness_check.mjs", {"base_url": server.base_url})
        result = run.result
        self.assertEqual(result["whoami"]["user_id"], "@alice:test.roost")
        stored = await server.request(
            "GET", f"/_matrix/client/v3/rooms/{q(result['room_id'])}/event/{q(result['event_id'])}",
            token=result["access_token"],
        )
        self.assertEqual(stored.status, 200, stored.body)
        self.assertEqual(stored.body["content"], {"msgtype": "m.text", "body": "hello from node"})

    async def test_a_matrix_error_in_the_script_comes_back_with_status_and_errcode(self) -> None:
        server = await start_server(self)
        run = await run_js(
            self, "harness_check.mjs",
            {"base_url": server.base_url, "fail_on": "/no/such/endpoint"},
            allow_error=True,
        )
        self.assertEqual(run.code, 1)
        self.assertEqual(run.result["error"]["httpStatus"], 404)
        self.assertEqual(run.result["error"]["errcode"], "M_UNRECOGNIZED")
