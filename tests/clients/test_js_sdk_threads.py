"""Threads in matrix-js-sdk with threadSupport on, as Element runs it: per-thread
notification counts from /sync, a threaded read receipt clearing them, and the
thread list from /threads."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.clients.js_harness import JsRun, run_js
from tests.server_harness import start_server


class JsSdkThreadTests(TestCase):
    timeout = 300

    async def _scenario(self) -> JsRun:
        server = await start_server(self)
        return await run_js(self, "threads.mjs", {"base_url": server.base_url})

    async def test_a_mention_in_a_thread_counts_on_the_thread_and_a_threaded_receipt_clears_it(
            self) -> None:
        run = await self._scenario()
        self.assertTrue(run.step("start")["supports_threads"])
        replies = run.step("replies")
        self.assertEqual(replies["thread_replies"], ["alice: in the thread", "and more"])
        self.assertEqual(run.step("thread_counts"), {
            "thread": {"total": 2, "highlight": 1},
            "main": {"total": 0, "highlight": 0},
        })
        self.assertEqual(run.step("threaded_receipt")["thread"], {"total": 0, "highlight": 0})

    async def test_a_fresh_client_lists_the_thread_from_the_server(self) -> None:
        run = await self._scenario()
        listed = run.step("thread_list")
        self.assertEqual([t["id"] for t in listed["threads"]], [run.result["root_id"]])
        [root] = listed["raw"]["chunk"]
        self.assertEqual(root["event_id"], run.result["root_id"])
        self.assertEqual(root["unsigned"]["m.relations"]["m.thread"]["count"], 2)
