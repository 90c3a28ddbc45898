"""Reports of events, rooms and users, and GET /timestamp_to_event, over real HTTP."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from roost.storage.reports import ReportStore
from tests.server_harness import q, start_server

V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"


class ReportTests(TestCase):
    async def test_reports_are_kept_for_admins(self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        bob = (await server.register("bob"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                     token=alice)).body["room_id"]
        await server.request("POST", f"{V3}/rooms/{q(room)}/join", {}, token=bob)
        event = (await server.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/1",
                                      {"msgtype": "m.text", "body": "spam"},
                                      token=alice)).body["event_id"]
        for path, body in ((f"{V3}/rooms/{q(room)}/report/{q(event)}", {"reason": "spam"}),
                           (f"{V3}/rooms/{q(room)}/report/{q(event)}", {}),
                           (f"{V3}/rooms/{q(room)}/report", {"reason": "bad room"}),
                           (f"{V3}/users/{q('@alice:test.roost')}/report", {"reason": ""})):
            resp = await server.request("POST", path, body, token=bob)
            self.assertEqual((resp.status, resp.body), (200, {}), path)
        reports = await ReportStore(server.hs.db).list(10)
        self.assertEqual(
            [(r.kind, r.reporter, r.room_id, r.event_id, r.target_user_id, r.reason)
             for r in reports],
            [("event", "@bob:test.roost", room, event, None, "spam"),
             ("event", "@bob:test.roost", room, event, None, None),
             ("room", "@bob:test.roost", room, None, None, "bad room"),
             ("user", "@bob:test.roost", None, None, "@alice:test.roost", "")])

    async def test_bad_reports_are_refused_and_nothing_is_kept(self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        carol = (await server.register("carol"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {}, token=alice)).body["room_id"]
        event = (await server.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/1",
                                      {"msgtype": "m.text", "body": "x"},
                                      token=alice)).body["event_id"]
        redacted = (await server.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/2",
                                         {"msgtype": "m.text", "body": "y"},
                                         token=alice)).body["event_id"]
        await server.request("PUT", f"{V3}/rooms/{q(room)}/redact/{q(redacted)}/r", {},
                             token=alice)
        cases = [
            (carol, f"{V3}/rooms/{q(room)}/report/{q(event)}", {"reason": "x"}, 404,
             "M_NOT_FOUND"),  # not in the room
            (alice, f"{V3}/rooms/{q(room)}/report/{q('$nope')}", {"reason": "x"}, 404,
             "M_NOT_FOUND"),
            (alice, f"{V3}/rooms/{q(room)}/report/{q(redacted)}", {"reason": "x"}, 404,
             "M_NOT_FOUND"),
            (alice, f"{V3}/rooms/{q(room)}/report/{q(event)}", {"reason": 5}, 400, "M_BAD_JSON"),
            (alice, f"{V3}/rooms/{q('!nope:test.roost')}/report", {"reason": "x"}, 404,
             "M_NOT_FOUND"),
            (alice, f"{V3}/rooms/{q(room)}/report", {}, 400, "M_MISSING_PARAM"),
            (alice, f"{V3}/users/{q('@ghost:test.roost')}/report", {"reason": "x"}, 404,
             "M_NOT_FOUND"),
            (alice, f"{V3}/users/{q('not-a-user')}/report", {"reason": "x"}, 404, "M_NOT_FOUND"),
            (alice, f"{V3}/users/{q('@carol:test.roost')}/report", {"reason": ["x"]}, 400,
             "M_BAD_JSON"),
        ]
        for token, path, body, status, errcode in cases:
            resp = await server.request("POST", path, body, token=token)
            self.assertEqual((resp.status, resp.body["errcode"]), (status, errcode), path)
        self.assertEqual(await ReportStore(server.hs.db).list(10), [])


class TimestampToEventTests(TestCase):
    async def test_nearest_visible_event_each_way(self) -> None:
        clock = Clock()
        clock.advance(1_000_000)
        server = await start_server(self, clock=clock)
        alice = (await server.register("alice"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {}, token=alice)).body["room_id"]
        sent = {}
        for n, label in ((1, "one"), (2, "two"), (3, "three")):
            clock.advance(10)
            sent[label] = (await server.request(
                "PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/{n}",
                {"msgtype": "m.text", "body": label}, token=alice)).body["event_id"]
        base = f"{V1}/rooms/{q(room)}/timestamp_to_event"
        t_two = 1_000_000_000 + 20_000  # ms: the second message's time
        for query, expected in ((f"ts={t_two}&dir=f", "two"), (f"ts={t_two}&dir=b", "two"),
                                (f"ts={t_two + 1}&dir=f", "three"),
                                (f"ts={t_two - 1}&dir=b", "one")):
            resp = await server.request("GET", f"{base}?{query}", token=alice)
            self.assertEqual(resp.status, 200, resp.body)
            self.assertEqual(resp.body["event_id"], sent[expected], query)
        t_three = t_two + 10_000
        last = await server.request("GET", f"{base}?ts={t_three + 5}&dir=b", token=alice)
        self.assertEqual((last.body["event_id"], last.body["origin_server_ts"]),
                         (sent["three"], t_three))
        after_all = await server.request("GET", f"{base}?ts={t_three + 1}&dir=f", token=alice)
        self.assertEqual((after_all.status, after_all.body["errcode"]), (404, "M_NOT_FOUND"))

    async def test_bad_queries_and_strangers_are_refused(self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        bob = (await server.register("bob"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {}, token=alice)).body["room_id"]
        base = f"{V1}/rooms/{q(room)}/timestamp_to_event"
        for token, query, status, errcode in (
            (alice, "dir=f", 400, "M_MISSING_PARAM"),
            (alice, "ts=5", 400, "M_MISSING_PARAM"),
            (alice, "ts=5&dir=up", 400, "M_INVALID_PARAM"),
            (alice, "ts=soon&dir=f", 400, "M_INVALID_PARAM"),
            (bob, "ts=5&dir=f", 403, "M_FORBIDDEN"),
        ):
            resp = await server.request("GET", f"{base}?{query}", token=token)
            self.assertEqual((resp.status, resp.body["errcode"]), (status, errcode), query)
        unknown = await server.request(
            "GET", f"{V1}/rooms/{q('!nope:test.roost')}/timestamp_to_event?ts=1&dir=f", token=alice)
        self.assertEqual((unknown.status, unknown.body["errcode"]), (404, "M_NOT_FOUND"))
