"""Messages over raw HTTP: /send, /event, /messages, /context, /redact, history visibility.

Every refusal is checked for its status and errcode and for storing nothing.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import TestCase

from tests.client_api.test_rooms_http import (
    ROOM_VERSIONS,
    SERVER,
    Client,
    assert_error,
    bodies,
    count_rows,
    start_users,
)
from tests.server_harness import q


def send_path(room_id: str, txn: str, event_type: str = "m.room.message") -> str:
    return f"/rooms/{q(room_id)}/send/{q(event_type)}/{txn}"


async def shared_room(version: str, *clients: Client, visibility: str = "shared") -> str:
    """A public room created by the first client, with `visibility` as history visibility."""
    return await clients[0].create_room(room_version=version, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": visibility}}])


async def all_bodies(client: Client, room_id: str) -> list[str]:
    return bodies((await client.messages(room_id, dir="f", limit=100))["chunk"])


class SendTests(TestCase):
    async def test_send_and_get_event(self) -> None:
        alice, _ = await start_users(self, "alice", "bob")
        for version in ROOM_VERSIONS:
            room = await alice.create_room(room_version=version)
            event_id = await alice.send(room, "hi")
            self.assertTrue(event_id.startswith("$"), event_id)
            resp = await alice.event(room, event_id)
            self.assertEqual(resp.status, 200, resp.body)
            event = resp.body
            self.assertEqual((event["event_id"], event["room_id"], event["sender"], event["type"]),
                             (event_id, room, alice.user_id, "m.room.message"))
            self.assertEqual(event["content"], {"msgtype": "m.text", "body": "hi"})
            self.assertNotIn("state_key", event)
            self.assertIsInstance(event["origin_server_ts"], int)
            self.assertGreaterEqual(event["unsigned"]["age"], 0)
            for field in ("hashes", "signatures", "auth_events", "prev_events", "depth"):
                self.assertNotIn(field, event)

    async def test_same_txn_same_device_is_one_event(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        first = await alice.send(room, "once", txn="abc")
        again = await alice.send(room, "once", txn="abc")
        self.assertEqual(first, again)
        self.assertEqual(await all_bodies(alice, room), ["once"])

    async def test_same_txn_other_device_or_other_room_is_a_new_event(self) -> None:
        (alice,) = await start_users(self, "alice")
        phone = await alice.login_again()
        room = await alice.create_room()
        other = await alice.create_room()
        first = await alice.send(room, "one", txn="abc")
        second = await phone.send(room, "two", txn="abc")
        third = await alice.send(other, "three", txn="abc")
        self.assertEqual(len({first, second, third}), 3)
        self.assertEqual(await all_bodies(alice, room), ["one", "two"])

    async def test_concurrent_retries_of_one_txn_make_one_event(self) -> None:
        from twisted.internet import defer

        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        sends = [defer.ensureDeferred(alice.send(room, "dup", txn="same")) for _ in range(5)]
        ids = await defer.gatherResults(sends)
        self.assertEqual(len(set(ids)), 1)
        self.assertEqual(await all_bodies(alice, room), ["dup"])

    async def test_send_bad_bodies(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        for raw, errcode in ((b"nope", "M_NOT_JSON"), (b"", "M_NOT_JSON"), (b"[1]", "M_BAD_JSON"),
                             (b'{"n": 1.5}', "M_BAD_JSON"), (b'{"n": 9007199254740992}', "M_BAD_JSON")):
            resp = await alice.call("PUT", send_path(room, "bad"), raw=raw)
            assert_error(self, resp, 400, errcode)
        self.assertEqual(await all_bodies(alice, room), [])

    async def test_sending_to_a_room_you_are_not_in_is_forbidden(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat")
        events = await count_rows(alice.server, "events")
        resp = await bob.call("PUT", send_path(room, "t1"), {"msgtype": "m.text", "body": "x"})
        assert_error(self, resp, 403, "M_FORBIDDEN")
        await bob.join(room)
        await bob.leave(room)
        resp = await bob.call("PUT", send_path(room, "t2"), {"msgtype": "m.text", "body": "x"})
        assert_error(self, resp, 403, "M_FORBIDDEN")
        self.assertEqual(await count_rows(alice.server, "events"), events + 2)

    async def test_sending_to_an_unknown_room_is_not_found(self) -> None:
        (alice,) = await start_users(self, "alice")
        resp = await alice.call("PUT", send_path(f"!nope:{SERVER}", "t"), {"body": "x"})
        assert_error(self, resp, 404, "M_NOT_FOUND")

    async def test_sending_below_events_level_is_forbidden(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room(preset="public_chat",
                                       power_level_content_override={"events_default": 10})
        await bob.join(room)
        resp = await bob.call("PUT", send_path(room, "t"), {"msgtype": "m.text", "body": "x"})
        assert_error(self, resp, 403, "M_FORBIDDEN")
        self.assertEqual(await all_bodies(alice, room), [])

    async def test_event_over_65536_bytes_is_too_large_and_not_stored(self) -> None:
        (alice,) = await start_users(self, "alice")
        for version in ROOM_VERSIONS:
            room = await alice.create_room(room_version=version)
            events = await count_rows(alice.server, "events")
            big = {"msgtype": "m.text", "body": "x" * 65536}
            resp = await alice.call("PUT", send_path(room, f"big{version}"), big)
            assert_error(self, resp, 413, "M_TOO_LARGE")
            resp = await alice.call("PUT", f"/rooms/{q(room)}/state/org.example.big/", big)
            assert_error(self, resp, 413, "M_TOO_LARGE")
            self.assertEqual(await count_rows(alice.server, "events"), events)
            await alice.send(room, "y" * 60000)  # just under the limit is fine

    async def test_body_over_the_listener_limit_is_too_large(self) -> None:
        (alice,) = await start_users(self, "alice", listeners={"client": {
            "bind_address": "127.0.0.1", "port": 0, "max_body_bytes": 4096}})
        room = await alice.create_room()
        events = await count_rows(alice.server, "events")
        resp = await alice.call("PUT", send_path(room, "big"), {"body": "x" * 5000})
        assert_error(self, resp, 413, "M_TOO_LARGE")
        self.assertEqual(await count_rows(alice.server, "events"), events)

    async def test_get_unknown_or_foreign_event_is_not_found(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        other = await alice.create_room()
        event_id = await alice.send(other, "elsewhere")
        for eid in ("$nope", event_id):
            assert_error(self, await alice.event(room, eid), 404, "M_NOT_FOUND")


class MessagesTests(TestCase):
    async def _room_with(self, count: int) -> tuple[Client, str, list[str]]:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        ids = [await alice.send(room, f"m{i}") for i in range(count)]
        return alice, room, ids

    async def test_backwards_pages_reach_the_create_event(self) -> None:
        (alice,) = await start_users(self, "alice")
        for version in ROOM_VERSIONS:
            room = await alice.create_room(room_version=version, name="n")
            for i in range(7):
                await alice.send(room, f"m{i}")
            seen, token, pages = [], None, 0
            while True:
                args = {"limit": 3} if token is None else {"limit": 3, "from": token}
                page = await alice.messages(room, **args)
                seen.extend(page["chunk"])
                pages += 1
                if "end" not in page:
                    break
                token = page["end"]
                self.assertLess(pages, 20)
            self.assertEqual(seen[-1]["type"], "m.room.create")
            self.assertEqual(bodies(seen), [f"m{i}" for i in reversed(range(7))])
            self.assertEqual(len({e["event_id"] for e in seen}), len(seen))

    async def test_forwards_from_a_backwards_end_token(self) -> None:
        alice, room, ids = await self._room_with(6)
        back = await alice.messages(room, limit=3)
        self.assertEqual(bodies(back["chunk"]), ["m5", "m4", "m3"])
        forward = await alice.messages(room, dir="f", **{"from": back["end"]}, limit=10)
        self.assertEqual(bodies(forward["chunk"]), ["m3", "m4", "m5"])
        self.assertEqual(forward["start"], back["end"])

    async def test_forwards_from_the_start_in_pages(self) -> None:
        alice, room, ids = await self._room_with(4)
        first = await alice.messages(room, dir="f", limit=3)
        self.assertEqual(first["chunk"][0]["type"], "m.room.create")
        rest = await alice.messages(room, dir="f", limit=100, **{"from": first["end"]})
        all_ids = [e["event_id"] for e in first["chunk"] + rest["chunk"]]
        self.assertEqual(all_ids[-4:], ids)
        self.assertEqual(len(set(all_ids)), len(all_ids))
        self.assertNotIn("end", rest)

    async def test_to_token_bounds_the_page_in_both_directions(self) -> None:
        alice, room, _ = await self._room_with(2)
        mark = (await alice.messages(room, limit=1))["start"]  # after m1
        for i in range(2, 4):
            await alice.send(room, f"m{i}")
        back = await alice.messages(room, to=mark, limit=10)
        self.assertEqual(bodies(back["chunk"]), ["m3", "m2"])
        self.assertEqual(len(back["chunk"]), 2)
        first = await alice.messages(room, dir="f", to=mark, limit=50)
        self.assertEqual(bodies(first["chunk"]), ["m0", "m1"])

    async def test_filter_types_and_not_types(self) -> None:
        alice, room, _ = await self._room_with(2)
        await alice.send(room, event_type="org.example.ping", content={"p": 1})
        await alice.put_state(room, "m.room.topic", {"topic": "t"})
        only = json.dumps({"types": ["m.room.message"]})
        chunk = (await alice.messages(room, filter=only, limit=50))["chunk"]
        self.assertEqual({e["type"] for e in chunk}, {"m.room.message"})
        self.assertEqual(len(chunk), 2)
        without = json.dumps({"not_types": ["m.room.message", "m.room.member"]})
        types = {e["type"] for e in (await alice.messages(room, filter=without, limit=50))["chunk"]}
        self.assertNotIn("m.room.message", types)
        self.assertNotIn("m.room.member", types)
        self.assertIn("org.example.ping", types)
        limited = await alice.messages(room, filter=json.dumps({"limit": 1}))
        self.assertEqual(len(limited["chunk"]), 1)

    async def test_filter_type_wildcards(self) -> None:
        alice, room, _ = await self._room_with(1)
        await alice.send(room, event_type="org.example.ping", content={})
        chunk = (await alice.messages(room, filter=json.dumps({"types": ["org.example.*"]})))["chunk"]
        self.assertEqual([e["type"] for e in chunk], ["org.example.ping"])
        not_m = json.dumps({"not_types": ["m.*"]})
        chunk = (await alice.messages(room, filter=not_m))["chunk"]
        self.assertEqual([e["type"] for e in chunk], ["org.example.ping"])

    async def test_bad_messages_parameters(self) -> None:
        alice, room, _ = await self._room_with(1)
        base = f"/rooms/{q(room)}/messages"
        cases = [("?dir=x", "M_INVALID_PARAM"), ("?dir=b&from=zzz", "M_INVALID_PARAM"),
                 ("?dir=b&limit=abc", "M_INVALID_PARAM"), ("?dir=b&filter=%7B", "M_NOT_JSON"),
                 ("?dir=b&filter=%5B%5D", "M_BAD_JSON"),
                 ("?dir=b&filter=" + q('{"types": "m.room.message"}'), "M_BAD_JSON")]
        for query, errcode in cases:
            assert_error(self, await alice.call("GET", base + query), 400, errcode)

    async def test_dir_is_required(self) -> None:
        alice, room, _ = await self._room_with(2)
        resp = await alice.call("GET", f"/rooms/{q(room)}/messages?limit=2")
        assert_error(self, resp, 400, "M_MISSING_PARAM")

    async def test_messages_of_unknown_room_is_forbidden_or_not_found(self) -> None:
        (alice,) = await start_users(self, "alice")
        resp = await alice.call("GET", f"/rooms/{q('!nope:' + SERVER)}/messages?dir=b")
        self.assertIn(resp.status, (403, 404))

    async def test_context_around_an_event(self) -> None:
        alice, room, ids = await self._room_with(7)
        ctx = await alice.ok("GET", f"/rooms/{q(room)}/context/{q(ids[3])}?limit=4")
        self.assertEqual(ctx["event"]["event_id"], ids[3])
        self.assertEqual(bodies(ctx["events_before"]), ["m2", "m1"])
        self.assertEqual(bodies(ctx["events_after"]), ["m4", "m5"])
        state_types = {e["type"] for e in ctx["state"]}
        self.assertIn("m.room.create", state_types)
        before = await alice.messages(room, **{"from": ctx["start"]}, limit=1)
        self.assertEqual(bodies(before["chunk"]), ["m0"])
        after = await alice.messages(room, dir="f", **{"from": ctx["end"]}, limit=5)
        self.assertEqual(bodies(after["chunk"]), ["m6"])

    async def test_context_of_unknown_event_is_not_found(self) -> None:
        alice, room, _ = await self._room_with(1)
        resp = await alice.call("GET", f"/rooms/{q(room)}/context/{q('$nope')}")
        assert_error(self, resp, 404, "M_NOT_FOUND")


class RedactionTests(TestCase):
    async def _room(self, version: str) -> tuple[Client, Client, Client, str]:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol")
        room = await alice.create_room(room_version=version, preset="public_chat")
        await bob.join(room)
        await carol.join(room)
        return alice, bob, carol, room

    async def test_redacted_content_is_gone_for_everyone(self) -> None:
        for version in ROOM_VERSIONS:
            alice, bob, carol, room = await self._room(version)
            target = await bob.send(room, "oops")
            resp = await alice.call("PUT", f"/rooms/{q(room)}/redact/{q(target)}/r1", {"reason": "spam"})
            self.assertEqual(resp.status, 200, resp.body)
            redaction_id = resp.body["event_id"]
            for client in (alice, bob, carol):
                event = (await client.event(room, target)).body
                self.assertEqual(event["content"], {})
                because = event["unsigned"]["redacted_because"]
                self.assertEqual((because["event_id"], because["sender"]), (redaction_id, alice.user_id))
                self.assertEqual(because["content"]["reason"], "spam")
                latest = (await client.messages(room, limit=2))["chunk"]
                self.assertEqual(latest[0]["event_id"], redaction_id)
                self.assertEqual(latest[0]["redacts"], target)
                self.assertEqual(latest[1]["content"], {})

    async def test_redact_txn_is_idempotent(self) -> None:
        alice, _, _, room = await self._room("12")
        target = await alice.send(room, "x")
        path = f"/rooms/{q(room)}/redact/{q(target)}/same"
        first = await alice.ok("PUT", path, {})
        self.assertEqual(await alice.ok("PUT", path, {}), first)

    async def test_own_event_may_be_redacted_without_the_redact_level(self) -> None:
        for version in ROOM_VERSIONS:
            _, bob, _, room = await self._room(version)
            target = await bob.send(room, "mine")
            await bob.ok("PUT", f"/rooms/{q(room)}/redact/{q(target)}/r", {})
            self.assertEqual((await bob.event(room, target)).body["content"], {})

    async def test_redacting_another_users_event_needs_the_redact_level(self) -> None:
        for version in ROOM_VERSIONS:
            alice, bob, carol, room = await self._room(version)
            target = await carol.send(room, "carol's")
            resp = await bob.call("PUT", f"/rooms/{q(room)}/redact/{q(target)}/r", {})
            assert_error(self, resp, 403, "M_FORBIDDEN")
            event = (await alice.event(room, target)).body
            self.assertEqual(event["content"]["body"], "carol's")
            self.assertNotIn("redacted_because", event["unsigned"])

    async def test_redaction_sent_through_send_is_applied_in_every_version(self) -> None:
        for version in ROOM_VERSIONS:
            alice, bob, _, room = await self._room(version)
            target = await bob.send(room, "gone")
            redaction = await alice.send(room, event_type="m.room.redaction",
                                         content={"redacts": target, "reason": "r"})
            event = (await bob.event(room, target)).body
            self.assertEqual(event["content"], {}, version)
            self.assertEqual(event["unsigned"]["redacted_because"]["event_id"], redaction)
            served = (await bob.event(room, redaction)).body
            self.assertEqual(served["redacts"], target)

    async def test_redaction_through_send_still_needs_the_redact_level(self) -> None:
        for version in ROOM_VERSIONS:
            alice, bob, _, room = await self._room(version)
            target = await alice.send(room, "alice's")
            resp = await bob.call("PUT", send_path(room, "r", "m.room.redaction"), {"redacts": target})
            assert_error(self, resp, 403, "M_FORBIDDEN")
            self.assertEqual((await bob.event(room, target)).body["content"]["body"], "alice's")

    async def test_redacting_unknown_event_is_not_found_and_non_member_forbidden(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await alice.create_room()
        target = await alice.send(room, "x")
        resp = await alice.call("PUT", f"/rooms/{q(room)}/redact/{q('$nope')}/r", {})
        assert_error(self, resp, 404, "M_NOT_FOUND")
        resp = await bob.call("PUT", f"/rooms/{q(room)}/redact/{q(target)}/r", {})
        assert_error(self, resp, 403, "M_FORBIDDEN")


class HistoryVisibilityTests(TestCase):
    async def test_joined_visibility_hides_what_came_before_the_join(self) -> None:
        for version in ROOM_VERSIONS:
            alice, bob = await start_users(self, "alice", "bob")
            room = await shared_room(version, alice, visibility="joined")
            before = await alice.send(room, "before")
            await bob.join(room)
            await alice.send(room, "after")
            self.assertEqual(await all_bodies(bob, room), ["after"])
            back = (await bob.messages(room, limit=50))["chunk"]
            self.assertEqual(bodies(back), ["after"])
            assert_error(self, await bob.event(room, before), 404, "M_NOT_FOUND")
            resp = await bob.call("GET", f"/rooms/{q(room)}/context/{q(before)}")
            assert_error(self, resp, 404, "M_NOT_FOUND")

    async def test_shared_visibility_shows_history_to_a_later_member(self) -> None:
        for version in ROOM_VERSIONS:
            alice, bob = await start_users(self, "alice", "bob")
            room = await shared_room(version, alice)
            before = await alice.send(room, "before")
            await bob.join(room)
            self.assertEqual(await all_bodies(bob, room), ["before"])
            self.assertEqual((await bob.event(room, before)).status, 200)
            ctx = await bob.ok("GET", f"/rooms/{q(room)}/context/{q(before)}")
            self.assertEqual(ctx["event"]["event_id"], before)

    async def test_context_hides_neighbours_from_before_the_join(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await shared_room("12", alice, visibility="joined")
        await alice.send(room, "hidden")
        await bob.join(room)
        seen = await alice.send(room, "seen")
        ctx = await bob.ok("GET", f"/rooms/{q(room)}/context/{q(seen)}?limit=10")
        self.assertNotIn("hidden", bodies(ctx["events_before"]))

    async def test_former_member_does_not_see_what_came_after_leaving(self) -> None:
        for version in ROOM_VERSIONS:
            alice, bob = await start_users(self, "alice", "bob")
            room = await shared_room(version, alice)
            await bob.join(room)
            await alice.send(room, "while here")
            await bob.leave(room)
            after = await alice.send(room, "after leaving")
            self.assertEqual(await all_bodies(bob, room), ["while here"])
            self.assertEqual(bodies((await bob.messages(room, limit=50))["chunk"]), ["while here"])
            assert_error(self, await bob.event(room, after), 404, "M_NOT_FOUND")

    async def test_non_member_cannot_read_a_private_room(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        for visibility in ("shared", "joined", "invited"):
            room = await shared_room("12", alice, visibility=visibility)
            event_id = await alice.send(room, "secret")
            resp = await bob.call("GET", f"/rooms/{q(room)}/messages?dir=b")
            assert_error(self, resp, 403, "M_FORBIDDEN")
            self.assertEqual((await bob.event(room, event_id)).status, 404)
            resp = await bob.call("GET", f"/rooms/{q(room)}/context/{q(event_id)}")
            self.assertIn(resp.status, (403, 404))

    async def test_world_readable_lets_a_non_member_read(self) -> None:
        for version in ROOM_VERSIONS:
            alice, bob = await start_users(self, "alice", "bob")
            room = await shared_room(version, alice, visibility="world_readable")
            event_id = await alice.send(room, "public")
            self.assertEqual(await all_bodies(bob, room), ["public"])
            self.assertEqual((await bob.event(room, event_id)).body["content"]["body"], "public")
            resp = await bob.call("PUT", send_path(room, "w"), {"body": "x"})
            assert_error(self, resp, 403, "M_FORBIDDEN")

    async def test_invited_visibility_starts_at_the_invite(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await shared_room("12", alice, visibility="invited")
        await alice.send(room, "before invite")
        await alice.invite(room, bob.user_id)
        await alice.send(room, "after invite")
        await bob.join(room)
        self.assertEqual(await all_bodies(bob, room), ["after invite"])

    async def test_visibility_change_applies_from_then_on(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        room = await shared_room("12", alice)
        await alice.send(room, "shared era")
        await alice.put_state(room, "m.room.history_visibility", {"history_visibility": "joined"})
        await alice.send(room, "joined era")
        await bob.join(room)
        await alice.send(room, "member era")
        self.assertEqual(await all_bodies(bob, room), ["shared era", "member era"])
