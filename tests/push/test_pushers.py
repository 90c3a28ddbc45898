"""Pushers against a real push gateway on loopback: GET /pushers, POST /pushers/set,
delivery in both formats, retries, rejected pushkeys, and a password change."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.client_api.test_rooms_http import Client, assert_error, start_users
from tests.postgres_harness import fresh_database
from tests.push.gateway import PushGateway
from tests.push.test_evaluator import caught_up, mention
from tests.server_harness import start_server

# The gateway is on loopback, which the default blocklist refuses.
OPEN = {"push": {"ip_range_blocklist": []}}
FAST_RETRIES = {"push": {"min_retry_interval": 20, "max_retry_interval": 100,
                         "ip_range_blocklist": []}}


def pusher_body(gateway: PushGateway, pushkey: str = "key-1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "http", "app_id": "org.example.app", "pushkey": pushkey,
        "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
        "data": {"url": gateway.url, "custom": "kept"}}
    data = extra.pop("data", None)
    if data is not None:
        body["data"] = {**body["data"], **data}
    body.update(extra)
    return body


async def pushers(client: Client) -> list[dict[str, Any]]:
    return (await client.ok("GET", "/pushers"))["pushers"]


async def room_of(alice: Client, bob: Client) -> str:
    room = await alice.create_room(preset="public_chat", name="Lounge")
    await bob.join(room)
    return room


class PusherSetTests(TestCase):
    async def test_set_list_and_remove(self) -> None:
        (alice,) = await start_users(self, "alice", **OPEN)
        gateway = await PushGateway.start(self)
        self.assertEqual(await pushers(alice), [])
        await alice.ok("POST", "/pushers/set", pusher_body(gateway, profile_tag="tag"))
        listed = await pushers(alice)
        self.assertEqual(len(listed), 1)
        self.assertEqual((listed[0]["pushkey"], listed[0]["kind"], listed[0]["app_id"],
                          listed[0]["profile_tag"], listed[0]["data"]["url"]),
                         ("key-1", "http", "org.example.app", "tag", gateway.url))
        # Setting it again updates it rather than adding a second.
        await alice.ok("POST", "/pushers/set", pusher_body(gateway, device_display_name="New"))
        listed = await pushers(alice)
        self.assertEqual([p["device_display_name"] for p in listed], ["New"])
        self.assertNotIn("profile_tag", listed[0])
        await alice.ok("POST", "/pushers/set", {"kind": None, "app_id": "org.example.app",
                                                 "pushkey": "key-1"})
        self.assertEqual(await pushers(alice), [])

    async def test_append_false_takes_the_pushkey_from_other_users(self) -> None:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol", **OPEN)
        gateway = await PushGateway.start(self)
        await alice.ok("POST", "/pushers/set", pusher_body(gateway))
        await bob.ok("POST", "/pushers/set", pusher_body(gateway, append=True))
        self.assertEqual(len(await pushers(alice)), 1)
        await carol.ok("POST", "/pushers/set", pusher_body(gateway))
        self.assertEqual((await pushers(alice), await pushers(bob)), ([], []))
        self.assertEqual(len(await pushers(carol)), 1)

    async def test_bad_pushers_are_refused_and_nothing_is_stored(self) -> None:
        (alice,) = await start_users(self, "alice", **OPEN)
        gateway = await PushGateway.start(self)
        good = pusher_body(gateway)
        cases: list[tuple[dict[str, Any], str]] = [
            ({k: v for k, v in good.items() if k != "app_id"}, "M_MISSING_PARAM"),
            ({k: v for k, v in good.items() if k != "kind"}, "M_MISSING_PARAM"),
            ({k: v for k, v in good.items() if k != "data"}, "M_MISSING_PARAM"),
            ({k: v for k, v in good.items() if k != "lang"}, "M_MISSING_PARAM"),
            ({**good, "kind": "email"}, "M_INVALID_PARAM"),
            ({**good, "kind": 5}, "M_BAD_JSON"),
            ({**good, "pushkey": 12}, "M_BAD_JSON"),
            ({**good, "append": "yes"}, "M_BAD_JSON"),
            ({**good, "data": "x"}, "M_BAD_JSON"),
            ({**good, "data": {}}, "M_INVALID_PARAM"),
            ({**good, "data": {"url": "http://127.0.0.1:1/elsewhere"}}, "M_INVALID_PARAM"),
            ({**good, "data": {"url": "ftp://h/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
            ({**good, "data": {"url": gateway.url, "format": "full"}}, "M_INVALID_PARAM"),
            ({**good, "app_id": "a" * 65}, "M_INVALID_PARAM"),
            ({**good, "pushkey": "k" * 513}, "M_INVALID_PARAM"),
        ]
        for body, errcode in cases:
            assert_error(self, await alice.call("POST", "/pushers/set", body), 400, errcode)
        assert_error(self, await alice.call("POST", "/pushers/set", raw=b"[]"), 400,
                     "M_BAD_JSON")
        self.assertEqual(await pushers(alice), [])


class DeliveryTests(TestCase):
    async def test_a_message_reaches_the_gateway_in_full_format(self) -> None:
        alice, bob, carol = await start_users(self, "alice", "bob", "carol", **OPEN)
        gateway = await PushGateway.start(self)
        room = await room_of(alice, bob)
        await carol.join(room)  # three members: .m.rule.message (a one-to-one room rings)
        await bob.ok("POST", "/pushers/set", pusher_body(gateway))
        event_id = await alice.send(room, "hello bob")
        [note] = await gateway.wait_for(1)
        self.assertEqual((note["event_id"], note["room_id"], note["type"], note["sender"]),
                         (event_id, room, "m.room.message", alice.user_id))
        self.assertEqual(note["content"]["body"], "hello bob")
        self.assertEqual(note["room_name"], "Lounge")
        self.assertEqual(note["counts"], {"unread": 1})
        self.assertEqual(note["prio"], "low")
        [device] = note["devices"]
        self.assertEqual((device["app_id"], device["pushkey"], device["data"], device["tweaks"]),
                         ("org.example.app", "key-1", {"custom": "kept"}, {}))
        self.assertIsInstance(device["pushkey_ts"], int)

    async def test_event_id_only_and_a_mention_with_highlight(self) -> None:
        alice, bob = await start_users(self, "alice", "bob", **OPEN)
        gateway = await PushGateway.start(self)
        room = await room_of(alice, bob)
        await bob.ok("POST", "/pushers/set",
                      pusher_body(gateway, data={"format": "event_id_only"}))
        event_id = await alice.send(room, content=mention("look", bob.user_id))
        [note] = await gateway.wait_for(1)
        self.assertEqual(note["event_id"], event_id)
        self.assertNotIn("content", note)
        self.assertNotIn("sender", note)
        self.assertEqual(note["prio"], "high")
        self.assertEqual(note["devices"][0]["tweaks"], {"sound": "default", "highlight": True})
        self.assertEqual(note["devices"][0]["data"], {"format": "event_id_only",
                                                      "custom": "kept"})

    async def test_own_events_and_quiet_events_are_not_pushed(self) -> None:
        alice, bob = await start_users(self, "alice", "bob", **OPEN)
        gateway = await PushGateway.start(self)
        room = await room_of(alice, bob)
        await bob.ok("POST", "/pushers/set", pusher_body(gateway))
        await bob.send(room, "mine")
        await alice.send(room, content={"msgtype": "m.notice", "body": "bot"})
        last = await alice.send(room, "counted")
        notes = await gateway.wait_for(1)
        await caught_up(bob)
        self.assertEqual([n["event_id"] for n in notes], [last])

    async def test_a_failing_gateway_is_retried_in_order(self) -> None:
        alice, bob = await start_users(self, "alice", "bob", **FAST_RETRIES)
        gateway = await PushGateway.start(self)
        room = await room_of(alice, bob)
        await bob.ok("POST", "/pushers/set", pusher_body(gateway))
        gateway.fail_next = 3
        sent = [await alice.send(room, f"m{i}") for i in range(3)]
        notes = await gateway.wait_for(3)
        self.assertEqual([n["event_id"] for n in notes], sent)
        self.assertEqual(gateway.failed, 3)

    async def test_a_rejected_pushkey_removes_the_pusher(self) -> None:
        alice, bob = await start_users(self, "alice", "bob", **OPEN)
        gateway = await PushGateway.start(self)
        room = await room_of(alice, bob)
        await bob.ok("POST", "/pushers/set", pusher_body(gateway))
        gateway.reject.add("key-1")
        await alice.send(room, "first")
        await gateway.wait_for(1)
        for _ in range(50):
            if not await pushers(bob):
                break
        self.assertEqual(await pushers(bob), [])
        await alice.send(room, "second")
        await caught_up(bob)
        self.assertEqual(len(gateway.received), 1)

    async def test_a_password_change_removes_other_devices_pushers(self) -> None:
        (alice,) = await start_users(self, "alice", **OPEN)
        gateway = await PushGateway.start(self)
        phone = await alice.login_again()
        await alice.ok("POST", "/pushers/set", pusher_body(gateway, pushkey="laptop"))
        await phone.ok("POST", "/pushers/set", pusher_body(gateway, pushkey="phone"))
        self.assertEqual(len(await pushers(alice)), 2)
        body = {"new_password": "another-pw-1", "auth": {
            "type": "m.login.password", "password": "hunter2-pw",
            "identifier": {"type": "m.id.user", "user": alice.user_id}}}
        resp = await alice.call("POST", "/account/password", body)
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual([p["pushkey"] for p in await pushers(alice)], ["laptop"])

    async def test_what_a_stopped_server_owed_is_sent_after_its_restart(self) -> None:
        dsn, data_dir = await fresh_database(self), self.mktemp()
        alice, bob = await start_users(self, "alice", "bob", dsn=dsn, data_dir=data_dir,
                                       **OPEN)
        gateway = await PushGateway.start(self)
        room = await room_of(alice, bob)
        await bob.ok("POST", "/pushers/set", pusher_body(gateway))
        await alice.send(room, "before")
        await gateway.wait_for(1)
        gateway.fail_next = 1000  # the gateway is down: "during" stays owed
        await alice.send(room, "during")
        await caught_up(bob)
        while gateway.failed == 0:
            await deferLater(reactor, 0.05)
        await alice.server.stop()
        gateway.fail_next = 0
        again = await start_server(self, dsn=dsn, data_dir=data_dir, **OPEN)
        resumed = Client(again, alice.user_id, alice.token, alice.device_id)
        await resumed.send(room, "after")
        notes = await gateway.wait_for(3)
        self.assertEqual([n["content"]["body"] for n in notes], ["before", "during", "after"])


class BlocklistTests(TestCase):
    async def test_a_gateway_in_a_blocked_range_is_never_contacted(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")  # default: loopback blocked
        gateway = await PushGateway.start(self)
        room = await room_of(alice, bob)
        await bob.ok("POST", "/pushers/set", pusher_body(gateway))
        await alice.send(room, "hello")
        delivery = bob.server.hs.push.delivery  # type: ignore[union-attr]
        while delivery.stats.failures == 0:
            await deferLater(reactor, 0.05)
        self.assertEqual((gateway.received, gateway.failed), ([], 0))
        self.assertEqual(len(await pushers(bob)), 1)  # kept: the gateway never said no
