"""A woken receiver's answer made at once from memory (SyncBuilder.build_at_once, with the
sections' and room fields' `at_once`) must be byte for byte the body `build` gives, for
users with different filters (per-thread counts, event_fields, lazy loading, rooms),
ignore lists, memberships, unread counts and own events; and it must decline (None) when a
part needs a read or a wait, so that `build` answers."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from roost.client_api.sync_filter import DEFAULT_FILTER, SyncFilter
from roost.http.bodies import encode_json
from tests.client_api.sync_helpers import call as _call
from tests.client_api.sync_helpers import mixed_rooms
from tests.server_harness import RunningServer, q

FILTERS: list[Any] = [
    None,
    {"room": {"timeline": {"limit": 1}}},
    {"room": {"timeline": {"not_types": ["m.room.name"]}}},
    {"room": {"timeline": {"senders": ["@bob:test.roost"]}}},
    {"room": {"timeline": {"unread_thread_notifications": True}}},
    {"event_fields": ["content.body", "type", "sender"]},
    {"event_format": "federation"},
    {"room": {"state": {"lazy_load_members": True}}},
    {"room": {"rooms": ["ROOM1"]}},
    {"room": {"not_rooms": ["ROOM1"]}},
    {"presence": {"types": []}},
]


def _filter(raw: Any, rooms: list[str]) -> SyncFilter:
    if raw is None:
        return DEFAULT_FILTER
    text = encode_json(raw).decode().replace("ROOM1", rooms[1])
    return SyncFilter.from_json(json.loads(text))


class AtOnceTests(TestCase):
    async def _setup(self) -> tuple[RunningServer, dict[str, Any], list[str]]:
        return await mixed_rooms(self)

    async def _compare(self, server: RunningServer, users: dict[str, Any], rooms: list[str],
                       since: Any, first: bool = False) -> list[bool]:
        """For every user and filter: `build`, then `build_at_once` (which uses what the
        first kept), then `build` again; the bodies must be equal whenever at once answers.
        With `first`, at once goes first, with nothing kept: it makes the rooms' shared
        parts itself. Returns whether it answered, per (user, filter)."""
        builder = server.hs.sync_builder
        assert builder is not None
        taken = []
        for name, user in users.items():
            for raw in FILTERS:
                filt = _filter(raw, rooms)
                user_id, device = user["user_id"], user["device_id"]
                if first:
                    _forget_parts(builder)
                    quick = builder.build_at_once(user_id, since, filt, device)
                built, token = await builder.build(user_id, since, filt, device_id=device)
                if not first:
                    quick = builder.build_at_once(user_id, since, filt, device)
                again, _ = await builder.build(user_id, since, filt, device_id=device)
                self.assertEqual(encode_json(built), encode_json(again), (name, raw))
                taken.append(quick is not None)
                if quick is not None:
                    self.assertEqual(quick[1], token)
                    self.assertEqual(encode_json(quick[0]), encode_json(built), (name, raw))
                    self.assertFalse(builder.is_empty(json.loads(quick[0].raw)))
        return taken

    async def test_at_once_answers_equal_build_s(self) -> None:
        server, users, rooms = await self._setup()
        builder = server.hs.sync_builder
        assert builder is not None
        alice, bob = users["alice"]["access_token"], users["bob"]["access_token"]
        since = builder.now()
        for i, room in enumerate(rooms):
            await _call(server, "PUT", f"/rooms/{q(room)}/send/m.room.message/a{i}", alice,
                        {"msgtype": "m.text", "body": f"to room {i}"})
        await _call(server, "PUT", f"/rooms/{q(rooms[1])}/send/m.room.message/b1", bob,
                    {"msgtype": "m.text", "body": "bob's"})
        taken = await self._compare(server, users, rooms, since)
        self.assertGreaterEqual(sum(taken), 20)  # at once for most...
        self.assertIn(False, taken)  # ...but not for bob's own event (his transaction id)
        # A mention (a highlight: counts differ per user), a thread reply (per-thread
        # counts), a name change (summary: never at once) and a redaction, from an older
        # `since` too.
        older, since = since, builder.now()
        root = await _call(server, "PUT", f"/rooms/{q(rooms[0])}/send/m.room.message/a8",
                           alice, {"msgtype": "m.text", "body": "carol: look"})
        await _call(server, "PUT", f"/rooms/{q(rooms[0])}/send/m.room.message/a9", alice,
                    {"msgtype": "m.text", "body": "in thread",
                     "m.relates_to": {"rel_type": "m.thread", "event_id": root["event_id"]}})
        await _call(server, "PUT", f"/rooms/{q(rooms[1])}/send/m.room.message/a10", alice,
                    {"msgtype": "m.text", "body": "dave, erin and carol"})
        self.assertIn(True, await self._compare(server, users, rooms, since))
        self.assertIn(True, await self._compare(server, users, rooms, since, first=True))
        await _call(server, "PUT", f"/rooms/{q(rooms[2])}/state/m.room.name/", alice,
                    {"name": "renamed"})
        await _call(server, "PUT", f"/rooms/{q(rooms[0])}/redact/{q(root['event_id'])}/x",
                    alice, {})
        await self._compare(server, users, rooms, since)
        await self._compare(server, users, rooms, older)
        await self._compare(server, users, rooms, older, first=True)

    async def test_made_at_once_for_the_first_receiver_equal_build_s(self) -> None:
        """Nothing kept: the first receiver's build_at_once makes the rooms' shared parts
        (no lazy loading, redaction or relation: nothing to await) for every filter."""
        server, users, rooms = await self._setup()
        builder = server.hs.sync_builder
        assert builder is not None
        alice, bob = users["alice"]["access_token"], users["bob"]["access_token"]
        since = builder.now()
        for i, room in enumerate(rooms):
            await _call(server, "PUT", f"/rooms/{q(room)}/send/m.room.message/f{i}", alice,
                        {"msgtype": "m.text", "body": f"to room {i}"})
        await _call(server, "PUT", f"/rooms/{q(rooms[0])}/send/m.room.message/g1", bob,
                    {"msgtype": "m.text", "body": "bob's"})
        await _call(server, "PUT", f"/rooms/{q(rooms[1])}/state/m.room.topic/", alice,
                    {"topic": "a topic"})
        taken = await self._compare(server, users, rooms, since, first=True)
        # All but lazy loading's (its members are read) and bob's own event's, for the users
        # in a room with news (all of them).
        self.assertGreaterEqual(sum(taken), 30)

    async def test_a_change_between_two_receivers_answers(self) -> None:
        """A message, typing or a receipt landing after one receiver's answer at once: the
        next receiver of the same `since` gets what `build` gives then, not the first's."""
        server, users, rooms = await self._setup()
        builder = server.hs.sync_builder
        assert builder is not None
        alice = users["alice"]["access_token"]
        since = await _window_started(server, users, rooms)
        await _call(server, "PUT", f"/rooms/{q(rooms[0])}/send/m.room.message/c1", alice,
                    {"msgtype": "m.text", "body": "one"})
        await builder.prepare(builder.now().events)
        bob, dave = users["bob"], users["dave"]
        first = builder.build_at_once(bob["user_id"], since, DEFAULT_FILTER, bob["device_id"])
        assert first is not None
        second = await _call(server, "PUT", f"/rooms/{q(rooms[1])}/send/m.room.message/c2",
                             alice, {"msgtype": "m.text", "body": "two"})
        await builder.prepare(builder.now().events)
        later = builder.build_at_once(dave["user_id"], since, DEFAULT_FILTER,
                                      dave["device_id"])
        built, token = await builder.build(dave["user_id"], since, DEFAULT_FILTER,
                                           device_id=dave["device_id"])
        self.assertIn(second["event_id"], encode_json(built).decode())
        if later is not None:
            self.assertEqual(later[1], token)
            self.assertEqual(later[0].raw, encode_json(built))
        # Typing in a room: not only room events are new, so no answer at once.
        await _call(server, "PUT", f"/rooms/{q(rooms[0])}/typing/{q(users['alice']['user_id'])}",
                    alice, {"typing": True, "timeout": 30000})
        self.assertIsNone(builder.build_at_once(dave["user_id"], since, DEFAULT_FILTER,
                                                dave["device_id"]))

    async def test_an_ignore_list_shares_the_answer_unless_an_ignored_user_sent(self) -> None:
        server, users, rooms = await self._setup()
        builder = server.hs.sync_builder
        assert builder is not None
        alice, bob = users["alice"]["access_token"], users["bob"]["access_token"]
        carol, dave = users["carol"], users["dave"]  # carol ignores bob
        await _window_started(server, users, rooms)
        for sender, token, txn in (("alice", alice, "i1"), ("bob", bob, "i2")):
            since = builder.now()
            await _call(server, "PUT", f"/rooms/{q(rooms[0])}/send/m.room.message/{txn}",
                        token, {"msgtype": "m.text", "body": f"from {sender}"})
            await builder.prepare(builder.now().events)
            answers = {}
            for user in (dave, carol):
                answered = builder.build_at_once(user["user_id"], since, DEFAULT_FILTER,
                                                 user["device_id"])
                built, _ = await builder.build(user["user_id"], since, DEFAULT_FILTER,
                                               device_id=user["device_id"])
                if answered is not None:
                    self.assertEqual(answered[0].raw, encode_json(built), sender)
                answers[user["user_id"]] = (answered, built)
            wakes = builder._at_once._wakes
            quick, built = answers[carol["user_id"]]
            if sender == "alice":  # carol gets dave's rooms' parts: one wake-up, one filter
                self.assertEqual(len(wakes), 1)
                assert quick is not None
                events = json.loads(quick[0].raw)["rooms"]["join"][rooms[0]]["timeline"]
                self.assertEqual([e["sender"] for e in events["events"]],
                                 [users["alice"]["user_id"]])
            else:  # bob's event is not hers: her own filter, her own (empty) parts
                self.assertEqual(len(wakes), 2)
                self.assertIsNone(quick)  # (nothing new for her: no answer at once)
                self.assertNotIn(rooms[0], built["rooms"]["join"])
                self.assertIsNotNone(answers[dave["user_id"]][0])

    async def test_at_once_declines_what_needs_a_read_or_a_wait(self) -> None:
        server, users, rooms = await self._setup()
        builder = server.hs.sync_builder
        assert builder is not None
        alice = users["alice"]["access_token"]
        dave = users["dave"]  # (carol ignores bob: her filter is her own)
        since = builder.now()
        await _call(server, "PUT", f"/rooms/{q(rooms[0])}/send/m.room.message/a0", alice,
                    {"msgtype": "m.text", "body": "hello"})
        await builder.build(dave["user_id"], since, DEFAULT_FILTER,
                            device_id=dave["device_id"])  # (the window starts)
        since = builder.now()
        await _call(server, "PUT", f"/rooms/{q(rooms[0])}/send/m.room.message/a1", alice,
                    {"msgtype": "m.text", "body": "hello again"})
        await builder.prepare(builder.now().events)  # as the waiter does before waking
        args = (dave["user_id"], since, DEFAULT_FILTER, dave["device_id"])
        # Nothing kept yet: the room's shared part is made at once (no read needed).
        made = builder._at_once.made
        first = builder.build_at_once(*args)
        assert first is not None
        self.assertEqual(builder._at_once.made, made + 1)
        built, _ = await builder.build(dave["user_id"], since, DEFAULT_FILTER,
                                       device_id=dave["device_id"])
        self.assertEqual(first[0].raw, encode_json(built))
        self.assertIsNotNone(builder.build_at_once(*args))
        # Counts not held: read by `build`.
        push = server.hs.push
        assert push is not None
        push.evaluator.counts.clear()
        self.assertIsNone(builder.build_at_once(*args))
        await builder.build(dave["user_id"], since, DEFAULT_FILTER,
                            device_id=dave["device_id"])
        self.assertIsNotNone(builder.build_at_once(*args))
        # A to-device message for dave's device: the inbox is read by `build`.
        await _call(server, "PUT", "/sendToDevice/m.test/t1", alice, {"messages": {
            dave["user_id"]: {dave["device_id"]: {"x": 1}}}})
        self.assertIsNone(builder.build_at_once(*args))
        body, _ = await builder.build(*args[:3], device_id=dave["device_id"])
        self.assertEqual(len(body["to_device"]["events"]), 1)

    async def test_woken_long_polls_are_answered_at_once(self) -> None:
        """Over HTTP: every receiver of a message gets it exactly once, the later ones from
        `build_at_once`."""
        server, users, rooms = await self._setup()
        builder = server.hs.sync_builder
        assert builder is not None
        answered: list[bool] = []
        at_once = builder.build_at_once

        def watched(*args: Any) -> Any:
            result = at_once(*args)
            answered.append(result is not None)
            return result

        builder.build_at_once = watched  # type: ignore[method-assign]
        receivers = ("bob", "carol", "dave", "erin")
        for name in receivers:  # each online first: a later presence change wakes no poll
            await _call(server, "GET", "/sync?timeout=0", users[name]["access_token"])
        since = str(builder.now())
        listeners = len(server.hs.notifier._listeners)
        polls = [defer.ensureDeferred(_call(
            server, "GET", f"/sync?since={since}&timeout=20000", users[name]["access_token"]))
            for name in receivers]
        # Send only once every poll waits (each holds a notifier listener): a poll still on
        # its way when the message lands builds it at once, never through build_at_once.
        for _ in range(600):
            if len(server.hs.notifier._listeners) >= listeners + len(receivers):
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        else:
            self.fail("the long polls never waited")
        sent = await _call(server, "PUT", f"/rooms/{q(rooms[0])}/send/m.room.message/w1",
                           users["alice"]["access_token"], {"msgtype": "m.text", "body": "hi"})
        for name, body in zip(receivers, await defer.gatherResults(polls), strict=True):
            token = users[name]["access_token"]
            while rooms[0] not in body["rooms"]["join"]:  # (a presence change came first)
                body = await _call(server, "GET", f"/sync?since={body['next_batch']}"
                                   "&timeout=20000", token)
            events = body["rooms"]["join"][rooms[0]]["timeline"]["events"]
            self.assertEqual([e["event_id"] for e in events], [sent["event_id"]])
            self.assertEqual(body["rooms"]["join"][rooms[0]]["unread_notifications"],
                             {"notification_count": 1, "highlight_count": 0})
        self.assertIn(True, answered)


def _forget_parts(builder: Any) -> None:
    """Nothing kept of what receivers share: the next answer makes it."""
    builder._shared._entries.clear()
    builder._at_once._wakes.clear()


async def _window_started(server: RunningServer, users: dict[str, Any], rooms: list[str]) -> Any:
    """A message read by an incremental sync: the sync window holds the stream from there
    (before, an answer at once has no range in memory). Returns the token after it."""
    builder = server.hs.sync_builder
    since = builder.now()
    await _call(server, "PUT", f"/rooms/{q(rooms[0])}/send/m.room.message/w0",
                users["alice"]["access_token"], {"msgtype": "m.text", "body": "start"})
    erin = users["erin"]
    await builder.build(erin["user_id"], since, DEFAULT_FILTER, device_id=erin["device_id"])
    return builder.now()


class SameAnswerTests(TestCase):
    async def test_equal_receivers_share_the_encoded_answer_and_others_do_not(self) -> None:
        """Receivers of one wake-up whose own values are equal get the previous receiver's
        encoded answer as it is; one whose unread counts differ gets its own, equal to
        `build`'s."""
        server, users, rooms = await mixed_rooms(self)
        builder = server.hs.sync_builder
        assert builder is not None
        await _window_started(server, users, rooms)
        # carol reads room 1 (a receipt: her count there differs from dave's and erin's)
        alice = users["alice"]["access_token"]
        read = await _call(server, "PUT", f"/rooms/{q(rooms[1])}/send/m.room.message/s0",
                           alice, {"msgtype": "m.text", "body": "to read"})
        await _call(server, "POST", f"/rooms/{q(rooms[1])}/receipt/m.read/"
                    f"{q(read['event_id'])}", users["carol"]["access_token"], {})
        carol = users["carol"]  # (her counts, dropped by her receipt, read again)
        await builder.build(carol["user_id"], None, DEFAULT_FILTER, device_id=carol["device_id"])
        since = builder.now()
        await _call(server, "PUT", f"/rooms/{q(rooms[1])}/send/m.room.message/s1", alice,
                    {"msgtype": "m.text", "body": "news"})
        await builder.prepare(builder.now().events)
        answers = {}
        for name in ("dave", "erin", "carol"):
            user = users[name]
            answered = builder.build_at_once(user["user_id"], since, DEFAULT_FILTER,
                                             user["device_id"])
            assert answered is not None, name
            answers[name] = answered[0]
        for name in ("dave", "erin", "carol"):
            user = users[name]
            built, _ = await builder.build(user["user_id"], since, DEFAULT_FILTER,
                                           device_id=user["device_id"])
            self.assertEqual(answers[name].raw, encode_json(built), name)
        self.assertIs(answers["erin"], answers["dave"])  # (the same counts, the same rooms)
        self.assertNotEqual(answers["carol"].raw, answers["dave"].raw)
