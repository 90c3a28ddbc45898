"""POST /user_directory/search over real HTTP and PostgreSQL: who is visible, ranking, limits."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from tests.client_api.test_profile import V3, ProfileServer, profile_path, start_with_profiles, uid

SEARCH = V3 + "/user_directory/search"


async def search(server: ProfileServer, token: str, term: str, **extra: Any) -> Any:
    return await server.ok("POST", SEARCH, {"search_term": term, **extra}, token)


def ids(body: Any) -> list[str]:
    return [r["user_id"] for r in body["results"]]


async def set_name(server: ProfileServer, token: str, name: str, displayname: str) -> None:
    await server.ok("PUT", profile_path(uid(name), "displayname"), {"displayname": displayname},
                    token)


class UserDirectoryTests(TestCase):
    async def test_only_users_sharing_a_room_or_in_a_public_room_are_found(self) -> None:
        server = await start_with_profiles(self)
        me = await server.user("searcher")
        tokens = {n: await server.user(n) for n in
                  ("pat_shared", "pat_public", "pat_stranger", "pat_left", "pat_invited")}
        private = await server.create_room(me)
        await server.ok("POST", f"{V3}/rooms/{private}/invite",
                        {"user_id": uid("pat_shared")}, me)
        await server.join(tokens["pat_shared"], private)
        await server.ok("POST", f"{V3}/rooms/{private}/invite",
                        {"user_id": uid("pat_left")}, me)
        await server.join(tokens["pat_left"], private)
        await server.leave(tokens["pat_left"], private)
        await server.ok("POST", f"{V3}/rooms/{private}/invite",
                        {"user_id": uid("pat_invited")}, me)
        # A public room the searcher is not in still makes its members visible.
        await server.create_room(tokens["pat_public"], visibility="public", preset="public_chat")
        # A private room of strangers does not.
        await server.create_room(tokens["pat_stranger"])

        body = await search(server, me, "pat")
        self.assertEqual(sorted(ids(body)), [uid("pat_public"), uid("pat_shared")])
        self.assertFalse(body["limited"])

    async def test_ranks_exact_then_prefix_then_substring(self) -> None:
        server = await start_with_profiles(self)
        me = await server.user("searcher")
        room = await server.create_room(me, visibility="public", preset="public_chat")
        names = ("xsamx", "samuel", "sam", "bob", "carol", "samantha")
        tokens = {n: await server.user(n) for n in names}
        for token in tokens.values():
            await server.join(token, room)
        await set_name(server, tokens["bob"], "bob", "Sam")  # exact by display name
        await set_name(server, tokens["carol"], "carol", "Big Sammy")  # substring of a name

        body = await search(server, me, "SAM")
        self.assertEqual(ids(body), [
            uid("bob"), uid("sam"),  # exact: display name "Sam", localpart "sam"
            uid("samantha"), uid("samuel"),  # prefix
            uid("carol"), uid("xsamx"),  # substring ("big sammy" sorts before "xsamx")
        ])
        self.assertEqual(body["results"][0], {"user_id": uid("bob"), "display_name": "Sam"})

    async def test_limit_cuts_the_results_and_sets_limited(self) -> None:
        server = await start_with_profiles(self)
        me = await server.user("searcher")
        room = await server.create_room(me, visibility="public", preset="public_chat")
        for i in range(4):
            await server.join(await server.user(f"kim{i}"), room)
        two = await search(server, me, "kim", limit=2)
        self.assertEqual((ids(two), two["limited"]), ([uid("kim0"), uid("kim1")], True))
        four = await search(server, me, "kim", limit=4)
        self.assertEqual((len(four["results"]), four["limited"]), (4, False))
        default = await search(server, me, "kim")
        self.assertEqual((len(default["results"]), default["limited"]), (4, False))

    async def test_display_name_and_avatar_are_returned_and_searchable(self) -> None:
        server = await start_with_profiles(self)
        me = await server.user("searcher")
        room = await server.create_room(me, visibility="public", preset="public_chat")
        token = await server.user("u1")
        await server.join(token, room)
        await set_name(server, token, "u1", "Zoë Quartz")
        await server.ok("PUT", profile_path(uid("u1"), "avatar_url"),
                        {"avatar_url": "mxc://test.roost/z"}, token)
        body = await search(server, me, "quartz")
        self.assertEqual(body["results"], [{"user_id": uid("u1"), "display_name": "Zoë Quartz",
                                            "avatar_url": "mxc://test.roost/z"}])

    async def test_like_wildcards_in_the_term_match_literally(self) -> None:
        server = await start_with_profiles(self)
        me = await server.user("searcher")
        room = await server.create_room(me, visibility="public", preset="public_chat")
        token = await server.user("plain")
        await server.join(token, room)
        await set_name(server, token, "plain", "100% real")
        self.assertEqual(ids(await search(server, me, "%")), [uid("plain")])
        self.assertEqual(ids(await search(server, me, "_")), [])
        self.assertEqual(ids(await search(server, me, "  ")), [])

    async def test_bad_requests(self) -> None:
        server = await start_with_profiles(self)
        me = await server.user("searcher")
        cases: list[tuple[Any, str]] = [
            ({}, "M_MISSING_PARAM"),
            ({"search_term": 5}, "M_INVALID_PARAM"),
            ({"search_term": "a", "limit": "10"}, "M_INVALID_PARAM"),
            ({"search_term": "a", "limit": -1}, "M_INVALID_PARAM"),
            ({"search_term": "a", "limit": True}, "M_INVALID_PARAM"),
        ]
        for body, errcode in cases:
            resp = await server.request("POST", SEARCH, body, token=me)
            self.assertEqual((resp.status, resp.body["errcode"]), (400, errcode), body)
        resp = await server.request("POST", SEARCH, {"search_term": "a"})
        self.assertEqual(resp.status, 401)

    async def test_search_can_use_the_trigram_indexes(self) -> None:
        server = await start_with_profiles(self)
        await server.user("searcher")

        def explain(txn: Any) -> str:
            txn.execute("SET LOCAL enable_seqscan = off")
            from roost.storage import profiles

            rows = txn.query("EXPLAIN " + profiles._SEARCH_SQL, {
                "searcher": uid("searcher"), "term": "abc", "prefix": "abc%",
                "contains": "%abc%", "limit": 11})
            return "\n".join(r[0] for r in rows)

        has_trgm = await server.hs.db.run(
            "has_trgm", lambda t: t.query("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'"))
        if not has_trgm:
            raise self.skipTest("pg_trgm is not installed on this PostgreSQL")
        plan = await server.hs.db.run("explain", explain)
        self.assertIn("users_localpart_trgm", plan)
        self.assertIn("profiles_displayname_trgm", plan)
