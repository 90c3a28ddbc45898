"""POST /search over real HTTP and PostgreSQL full-text search."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from roost.client_api.search_index import DELAY_S
from roost.storage.search import SearchStore
from tests.server_harness import RunningServer, q, start_server

V3 = "/_matrix/client/v3"


class _Users:
    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.tokens: dict[str, str] = {}
        self.txn = 0

    async def add(self, name: str) -> str:
        self.tokens[name] = (await self.server.register(name))["access_token"]
        return self.tokens[name]

    async def room(self, who: str, **body: Any) -> str:
        resp = await self.server.request("POST", V3 + "/createRoom", body, token=self.tokens[who])
        assert resp.status == 200, resp.body
        return str(resp.body["room_id"])

    async def join(self, name: str, room: str) -> None:
        resp = await self.server.request("POST", f"{V3}/rooms/{q(room)}/join", {},
                                         token=self.tokens[name])
        assert resp.status == 200, resp.body

    async def say(self, name: str, room: str, text: str, **extra: Any) -> str:
        self.txn += 1
        resp = await self.server.request(
            "PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/t{self.txn}",
            {"msgtype": "m.text", "body": text, **extra}, token=self.tokens[name])
        assert resp.status == 200, resp.body
        return str(resp.body["event_id"])

    async def search(self, name: str, criteria: dict[str, Any], next_batch: str | None = None
                     ) -> Any:
        path = V3 + "/search" + (f"?next_batch={next_batch}" if next_batch else "")
        resp = await self.server.request("POST", path, {"search_categories": {
            "room_events": criteria}}, token=self.tokens[name])
        assert resp.status == 200, resp.body
        return resp.body["search_categories"]["room_events"]


def ids(found: Any) -> list[str]:
    return [r["result"]["event_id"] for r in found["results"]]


class SearchTests(TestCase):
    async def test_the_indexer_follows_the_stream_without_a_search(self) -> None:
        clock = task.Clock()
        server = await start_server(self, clock=clock)
        users = _Users(server)
        await users.add("alice")
        room = await users.room("alice")
        await users.say("alice", room, "indexed in the background")
        store = SearchStore(server.hs.db)
        clock.advance(DELAY_S)
        for _ in range(1200):  # the pass runs on the real reactor and database (slow when loaded)
            if await store.position() >= server.hs.streams["events"].current:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(await store.position(), server.hs.streams["events"].current)

    async def test_finds_words_stemmed_by_rank_and_recent_and_pages_with_next_batch(self) -> None:
        server = await start_server(self)
        users = _Users(server)
        await users.add("alice")
        room = await users.room("alice")
        first = await users.say("alice", room, "The cats are sleeping on the sofa")
        await users.say("alice", room, "Nothing to see here")
        second = await users.say("alice", room, "one cat, cat and cat again")
        third = await users.say("alice", room, "a cat")
        found = await users.search("alice", {"search_term": "cat"})
        self.assertEqual(found["count"], 3)
        self.assertEqual(set(ids(found)), {first, second, third})
        self.assertEqual(ids(found)[0], second)  # the most occurrences ranks first
        self.assertIn("cat", found["highlights"])
        self.assertNotIn("next_batch", found)
        recent = await users.search("alice", {"search_term": "cat", "order_by": "recent",
                                              "filter": {"limit": 2}})
        self.assertEqual(ids(recent), [third, second])
        rest = await users.search("alice", {"search_term": "cat", "order_by": "recent",
                                            "filter": {"limit": 2}}, recent["next_batch"])
        self.assertEqual(ids(rest), [first])
        self.assertNotIn("next_batch", rest)
        ranked = await users.search("alice", {"search_term": "cat", "filter": {"limit": 2}})
        more = await users.search("alice", {"search_term": "cat", "filter": {"limit": 2}},
                                  ranked["next_batch"])
        self.assertEqual(sorted(ids(ranked) + ids(more)), sorted([first, second, third]))
        result = found["results"][0]["result"]
        self.assertEqual((result["room_id"], result["content"]["body"]),
                         (room, "one cat, cat and cat again"))

    async def test_only_rooms_and_events_the_user_may_see(self) -> None:
        server = await start_server(self)
        users = _Users(server)
        for name in ("alice", "bob", "carol", "dan"):
            await users.add(name)
        room = await users.room("alice", preset="public_chat", initial_state=[
            {"type": "m.room.history_visibility", "state_key": "",
             "content": {"history_visibility": "joined"}}])
        await users.join("dan", room)
        before = await users.say("alice", room, "secret plans before carol")
        await users.join("carol", room)
        during = await users.say("alice", room, "secret plans with carol")
        resp = await server.request("POST", f"{V3}/rooms/{q(room)}/leave", {},
                                    token=users.tokens["dan"])
        self.assertEqual(resp.status, 200)
        after = await users.say("alice", room, "secret plans after dan left")
        self.assertEqual(set(ids(await users.search("alice", {"search_term": "secret"}))),
                         {before, during, after})
        self.assertEqual(ids(await users.search("bob", {"search_term": "secret"})), [])
        self.assertEqual(ids(await users.search("carol", {"search_term": "secret",
                                                          "order_by": "recent"})),
                         [after, during])
        self.assertEqual(set(ids(await users.search("dan", {"search_term": "secret"}))),
                         {before, during})
        # Nothing from a user one ignores is found.
        resp = await server.request("PUT", f"{V3}/user/{q('@dan:test.roost')}/account_data/"
                                    "m.ignored_user_list",
                                    {"ignored_users": {"@alice:test.roost": {}}},
                                    token=users.tokens["dan"])
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(ids(await users.search("dan", {"search_term": "secret"})), [])
        # A redacted message is found by nobody.
        resp = await server.request("PUT", f"{V3}/rooms/{q(room)}/redact/{q(during)}/r1", {},
                                    token=users.tokens["alice"])
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(set(ids(await users.search("alice", {"search_term": "secret"}))),
                         {before, after})

    async def test_filters_keys_context_state_and_groups(self) -> None:
        server = await start_server(self)
        users = _Users(server)
        await users.add("alice")
        await users.add("bob")
        one = await users.room("alice", name="Garden club", topic="roses and tulips",
                               preset="public_chat")
        two = await users.room("alice", preset="public_chat")
        await users.join("bob", one)
        await users.join("bob", two)
        await users.say("alice", one, "before the rose")
        a = await users.say("bob", one, "my rose is red")
        await users.say("alice", one, "after the rose")
        b = await users.say("alice", two, "rose water", url="mxc://x/y")
        self.assertEqual(ids(await users.search("alice", {"search_term": "rose", "filter": {
            "senders": ["@bob:test.roost"]}})), [a])
        self.assertEqual(ids(await users.search("alice", {"search_term": "rose", "filter": {
            "rooms": [two]}})), [b])
        self.assertEqual(ids(await users.search("alice", {"search_term": "rose", "filter": {
            "not_rooms": [one]}})), [b])
        self.assertEqual(ids(await users.search("alice", {"search_term": "rose", "filter": {
            "contains_url": True}})), [b])
        topic = await users.search("alice", {"search_term": "tulips", "keys": ["content.topic"]})
        self.assertEqual([r["result"]["type"] for r in topic["results"]], ["m.room.topic"])
        self.assertEqual(ids(await users.search("alice", {"search_term": "tulips",
                                                          "keys": ["content.body"]})), [])
        found = await users.search("alice", {
            "search_term": "red", "include_state": True,
            "event_context": {"before_limit": 1, "after_limit": 1, "include_profile": True},
            "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]}})
        [result] = found["results"]
        context = result["context"]
        self.assertEqual([e["content"]["body"] for e in context["events_before"]],
                         ["before the rose"])
        self.assertEqual([e["content"]["body"] for e in context["events_after"]],
                         ["after the rose"])
        self.assertEqual(context["profile_info"]["@bob:test.roost"], {"displayname": "bob"})
        self.assertTrue(context["start"].startswith("s") and context["end"].startswith("s"))
        messages = await server.request(
            "GET", f"{V3}/rooms/{q(one)}/messages?dir=b&limit=1&from={context['start']}",
            token=users.tokens["alice"])
        # `start` lies just before the earliest context event: paging back from it goes on
        # with the event before that one (Bob's join).
        self.assertEqual([(e["type"], e["state_key"]) for e in messages.body["chunk"]],
                         [("m.room.member", "@bob:test.roost")])
        self.assertIn(("m.room.name", ""), {(e["type"], e["state_key"])
                                            for e in found["state"][one]})
        self.assertEqual(found["groups"]["room_id"][one]["results"], [a])
        self.assertEqual(found["groups"]["sender"]["@bob:test.roost"]["order"], 1)

    async def test_bad_searches_are_refused(self) -> None:
        server = await start_server(self)
        users = _Users(server)
        token = await users.add("alice")
        cases: list[tuple[Any, str]] = [
            ({}, "M_MISSING_PARAM"),
            ({"search_categories": []}, "M_BAD_JSON"),
            ({"search_categories": {"room_events": {}}}, "M_MISSING_PARAM"),
            ({"search_categories": {"room_events": {"search_term": 5}}}, "M_BAD_JSON"),
            ({"search_categories": {"room_events": {"search_term": "x", "order_by": "size"}}},
             "M_INVALID_PARAM"),
            ({"search_categories": {"room_events": {"search_term": "x", "keys": ["sender"]}}},
             "M_INVALID_PARAM"),
            ({"search_categories": {"room_events": {"search_term": "x",
                                                    "filter": {"limit": -1}}}},
             "M_INVALID_PARAM"),
            ({"search_categories": {"room_events": {"search_term": "x",
                                                    "filter": {"limit": "5"}}}}, "M_BAD_JSON"),
            ({"search_categories": {"room_events": {"search_term": "x",
                                                    "filter": {"senders": "bob"}}}},
             "M_BAD_JSON"),
            ({"search_categories": {"room_events": {
                "search_term": "x", "event_context": {"before_limit": -2}}}}, "M_INVALID_PARAM"),
            ({"search_categories": {"room_events": {
                "search_term": "x", "groupings": {"group_by": [{"key": "type"}]}}}},
             "M_INVALID_PARAM"),
        ]
        for body, errcode in cases:
            resp = await server.request("POST", V3 + "/search", body, token=token)
            self.assertEqual((resp.status, resp.body["errcode"]), (400, errcode), body)
        resp = await server.request("POST", V3 + "/search?next_batch=garbage!", {
            "search_categories": {"room_events": {"search_term": "x"}}}, token=token)
        self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_PARAM"))
        resp = await server.request("POST", V3 + "/search", {
            "search_categories": {"room_events": {"search_term": "x"}}})
        self.assertEqual(resp.status, 401)
        empty = await users.search("alice", {"search_term": ""})
        self.assertEqual((empty["count"], empty["results"]), (0, []))
