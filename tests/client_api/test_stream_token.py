"""The one stream token: its written form, and every endpoint taking the tokens /sync gives."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from roost.client_api.errors import MatrixError
from roost.client_api.stream_token import STREAMS, StreamToken, events_position
from tests.server_harness import start_server

V3 = "/_matrix/client/v3"


class StreamTokenFormTests(TestCase):
    def test_round_trip_names_every_stream_in_order(self) -> None:
        token = StreamToken(*range(1, len(STREAMS) + 1))
        self.assertEqual(str(token), "s" + "_".join(str(i) for i in range(1, len(STREAMS) + 1)))
        self.assertEqual(StreamToken.parse(str(token)), token)

    def test_shorter_older_tokens_read_missing_streams_as_zero(self) -> None:
        self.assertEqual(StreamToken.parse("s26"), StreamToken(events=26))
        self.assertEqual(StreamToken.parse("s26_3"), StreamToken(events=26, typing=3))

    def test_backfilled_history_positions_are_negative(self) -> None:
        self.assertEqual(events_position("s-12", "from"), -12)

    def test_malformed_tokens_are_refused_as_invalid_params(self) -> None:
        too_many = "s" + "_".join("1" for _ in range(len(STREAMS) + 1))
        for raw in ("", "s", "t5", "s1_", "s1__2", "s1_-2", "s 1", "s1.5", "s" + "9" * 19,
                    "s\u0661", too_many, "s1\n"):
            with self.assertRaises(MatrixError, msg=raw) as caught:
                StreamToken.parse(raw, "from")
            self.assertEqual((caught.exception.status, caught.exception.errcode),
                             (400, "M_INVALID_PARAM"))


class TokenAcrossEndpointsTests(TestCase):
    async def test_messages_members_and_context_take_sync_tokens(self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {}, token=alice)).body["room_id"]
        for i in range(3):
            await server.request("PUT", V3 + f"/rooms/{room}/send/m.room.message/b{i}",
                                 {"msgtype": "m.text", "body": f"before{i}"}, token=alice)
        first = await server.request("GET", V3 + "/sync", token=alice)
        since = first.body["next_batch"]
        self.assertGreater(since.count("_"), 0)  # a full sync token, not an s<N> one
        prev_batch = first.body["rooms"]["join"][room]["timeline"]["prev_batch"]
        after = await server.request("PUT", V3 + f"/rooms/{room}/send/m.room.message/a0",
                                     {"msgtype": "m.text", "body": "after"}, token=alice)
        # Backwards from next_batch: what the sync already held, newest first.
        back = await server.request(
            "GET", V3 + f"/rooms/{room}/messages?dir=b&limit=2&from={since}", token=alice)
        self.assertEqual(back.status, 200, back.body)
        self.assertEqual([e["content"].get("body") for e in back.body["chunk"]],
                         ["before2", "before1"])
        # Forwards from next_batch: only what came after it.
        fwd = await server.request(
            "GET", V3 + f"/rooms/{room}/messages?dir=f&from={since}", token=alice)
        self.assertEqual([e["event_id"] for e in fwd.body["chunk"]], [after.body["event_id"]])
        # `to` takes a sync token too; prev_batch still pages back.
        upto = await server.request(
            "GET", V3 + f"/rooms/{room}/messages?dir=f&from={prev_batch}&to={since}",
            token=alice)
        self.assertEqual(upto.status, 200, upto.body)
        self.assertNotIn(after.body["event_id"], [e["event_id"] for e in upto.body["chunk"]])
        # /members at a sync token.
        members = await server.request("GET", V3 + f"/rooms/{room}/members?at={since}",
                                       token=alice)
        self.assertEqual(members.status, 200, members.body)
        self.assertEqual([e["state_key"] for e in members.body["chunk"]], ["@alice:test.roost"])
        # /context's start and end feed /messages.
        for limit, expected in ((2, "before1"), (0, "before2")):
            ctx = await server.request(
                "GET", V3 + f"/rooms/{room}/context/{after.body['event_id']}?limit={limit}",
                token=alice)
            older = await server.request(
                "GET", V3 + f"/rooms/{room}/messages?dir=b&limit=1&from={ctx.body['start']}",
                token=alice)
            self.assertEqual([e["content"].get("body") for e in older.body["chunk"]],
                             [expected])
            newer = await server.request(
                "GET", V3 + f"/rooms/{room}/messages?dir=f&from={ctx.body['end']}", token=alice)
            self.assertEqual(newer.body["chunk"], [])

    async def test_sync_accepts_older_shorter_tokens(self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {}, token=alice)).body["room_id"]
        first = await server.request("GET", V3 + "/sync", token=alice)
        events_only = first.body["next_batch"].split("_")[0]  # e.g. "s26": a five-stream
        sent = await server.request("PUT", V3 + f"/rooms/{room}/send/m.room.message/x",
                                    {"msgtype": "m.text", "body": "x"}, token=alice)
        resp = await server.request("GET", V3 + f"/sync?since={events_only}", token=alice)
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual([e["event_id"] for e in
                          resp.body["rooms"]["join"][room]["timeline"]["events"]],
                         [sent.body["event_id"]])

    async def test_bad_tokens_are_400_everywhere(self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {}, token=alice)).body["room_id"]
        for path in ("/sync?since=s1_x", f"/rooms/{room}/messages?dir=b&from=nope",
                     f"/rooms/{room}/messages?dir=b&to=s1__1",
                     f"/rooms/{room}/members?at=s99999999999999999999"):
            resp = await server.request("GET", V3 + path, token=alice)
            self.assertEqual((resp.status, resp.body.get("errcode")), (400, "M_INVALID_PARAM"),
                             path)
