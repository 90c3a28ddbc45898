"""What Element does every day beyond sending, through matrix-js-sdk against Roost,
each seen arriving through the SDK's own sync loop: login flows, room tags, read
markers, search, ignoring a user, typing and a display name change."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.clients.js_harness import JsRun, run_js
from tests.server_harness import start_server


class JsSdkEverydayTests(TestCase):
    timeout = 300

    async def _scenario(self, *only: str) -> JsRun:
        server = await start_server(self)
        return await run_js(self, "everyday.mjs", {"base_url": server.base_url, "only": list(only)})

    async def test_login_flows_offer_passwords(self) -> None:
        run = await self._scenario("login_flows")
        self.assertIn("m.login.password", run.step("login_flows"))

    async def test_a_tag_set_and_removed_arrives_through_sync(self) -> None:
        run = await self._scenario("tags")
        tags = run.step("tags")
        self.assertEqual(tags["tagged"], {"m.favourite": {"order": 0.5}})
        self.assertEqual(tags["after"], {})

    async def test_read_markers_set_fully_read_and_the_read_receipt(self) -> None:
        run = await self._scenario("read_markers")
        markers = run.step("read_markers")
        self.assertEqual(markers["fully_read"], markers["read_up_to"])

    async def test_search_finds_the_message_with_the_word(self) -> None:
        run = await self._scenario("search")
        found = run.step("search")
        self.assertEqual([r["body"] for r in found], ["a pineapple on the table"])

    async def test_an_ignored_users_later_messages_do_not_reach_the_client(self) -> None:
        run = await self._scenario("ignore")
        ignored = run.step("ignore")
        self.assertEqual(ignored["ignored"], ["@bob:test.roost"])
        self.assertFalse(ignored["ignored_event_seen"])

    async def test_typing_starts_and_stops(self) -> None:
        run = await self._scenario("typing")
        self.assertIs(run.step("typing"), True)

    async def test_a_new_display_name_shows_in_the_room(self) -> None:
        run = await self._scenario("displayname")
        self.assertEqual(run.step("displayname"), "Bobby")
