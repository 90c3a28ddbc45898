"""Push evaluation of local messages stored in the messages' own persist transaction
(PushEvaluator.prepare, RoomEngine's PersistCompanion): the same outcomes and counts as
the read loop's write, the evaluator's stored position moved in that transaction, and a
failed persist leaving the events to the read loop."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from roost.storage.events import EventStore
from tests.client_api.test_rooms_http import Client, start_users
from tests.push.test_evaluator import mention, notifications, unread


class Spy:
    """Counts calls of one method of one object (and still runs it)."""

    def __init__(self, testcase: TestCase, target: Any, name: str) -> None:
        self.calls = 0
        original = getattr(target, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        testcase.patch(target, name, counted)


async def stored_position(client: Client) -> int:
    row = await client.server.hs.db.run(
        "push position",
        lambda t: t.query_one("SELECT stream_position FROM push_evaluator_position"))
    return int(row[0])


async def warm_room(alice: Client, bob: Client, carol: Client) -> str:
    """A room of three whose members and rules the evaluator holds (one message read)."""
    room = await alice.create_room(preset="public_chat")
    await bob.join(room)
    await carol.join(room)
    await alice.send(room, "warm")
    await notifications(bob)  # evaluation caught up (the room and rules are cached)
    return room


class StoredWithEventsTests(TestCase):
    async def test_a_message_and_its_evaluation_commit_together(self) -> None:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol")
        room = await warm_room(alice, bob, carol)
        hs = alice.server.hs
        assert hs.push is not None
        record = Spy(self, hs.push.evaluator._actions, "record")
        for i in range(3):
            await alice.send(room, f"m{i}")
            # Stored by the send's own transaction: the evaluator is there when it answers.
            self.assertEqual(hs.push.evaluator.position, hs.streams["events"].current)
            self.assertEqual(await stored_position(alice), hs.streams["events"].current)
        await alice.send(room, content=mention("ping", carol.user_id))
        self.assertEqual(record.calls, 0)
        self.assertEqual(await unread(bob, room), {"main": (5, 0)})
        self.assertEqual(await unread(carol, room), {"main": (5, 1)})
        listed = (await notifications(carol, "?limit=10"))["notifications"]
        self.assertEqual([n["event"]["content"]["body"] for n in listed[:2]], ["ping", "m2"])
        # Sending read the room: the sender's own read is stored with the message too.
        await bob.send(room, "answer")
        self.assertEqual(await unread(bob, room), {})
        self.assertEqual(await unread(alice, room), {"main": (1, 0)})
        self.assertEqual(record.calls, 0)

    async def test_a_state_event_and_an_unknown_relation_go_through_the_read_loop(self) -> None:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol")
        room = await warm_room(alice, bob, carol)
        hs = alice.server.hs
        assert hs.push is not None
        record = Spy(self, hs.push.evaluator._actions, "record")
        await alice.put_state(room, "m.room.topic", {"topic": "t"})
        await notifications(bob)
        self.assertEqual(record.calls, 1)
        # A reference to an event whose thread the evaluator does not hold: it asks storage.
        hs.push.evaluator._threads.clear()
        warm = (await notifications(bob, "?limit=10"))["notifications"][-1]["event"]
        await alice.send(room, content={"msgtype": "m.text", "body": "see", "m.relates_to": {
            "rel_type": "m.reference", "event_id": warm["event_id"]}})
        await notifications(bob)
        self.assertEqual(record.calls, 2)
        self.assertEqual(await unread(bob, room), {"main": (2, 0)})
        # The room's state changed: its members are made again from the new state, and the
        # next message is stored with its evaluation once more.
        await alice.send(room, "after the topic")
        self.assertEqual(record.calls, 2)
        self.assertEqual(await unread(carol, room), {"main": (3, 0)})

    async def test_a_failed_persist_leaves_the_events_to_the_read_loop(self) -> None:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol")
        room = await warm_room(alice, bob, carol)
        hs = alice.server.hs
        assert hs.push is not None
        original = EventStore.persist_batch
        failing = [True]

        async def persist_once_failing(store: EventStore, batch: Any) -> None:
            if failing and batch.push is not None:
                failing.clear()
                # Committed, and then the connection is lost: nobody knows it committed.
                await original(store, batch)
                raise ConnectionError("lost before the commit's answer")
            await original(store, batch)

        self.patch(EventStore, "persist_batch", persist_once_failing)
        # The send is answered from its stored txn id (client_api/send.py).
        await alice.send(room, "lost?")
        self.assertFalse(failing)
        await alice.send(room, "next")
        # The read loop read the committed message back and evaluated it again: stored once.
        self.assertEqual(await unread(bob, room), {"main": (3, 0)})
        self.assertEqual(await unread(carol, room), {"main": (3, 0)})
        listed = (await notifications(bob, "?limit=10"))["notifications"]
        self.assertEqual([n["event"]["content"]["body"] for n in listed],
                         ["next", "lost?", "warm"])
        self.assertEqual(await stored_position(alice), hs.streams["events"].current)
