"""Which servers get an event (federation/destinations.py).

The rule itself and `RoomDestinations` over a fake store (no database: each case
states the room's hosts), then the rule through a real sender: destinations that
follow joins and a server's last leave, and a ban reaching the banned server from a
room no other server is in (the sender's pass for such rooms decides by the rule too).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.trial.unittest import TestCase

from roost.federation.destinations import GROUP_CACHE_SIZE, RoomDestinations, destinations_among
from roost.rooms.engine import NewEvent
from roost.storage.federation_outbound import OutboundEvent
from tests.federation.test_sender import REMOTE, SenderFixture, _async, _id
from tests.federation.two_servers import V3, eventually
from tests.server_harness import q

HERE = "here.test"
ROOM = "!r:here.test"


class DestinationsAmongTests(TestCase):
    def test_every_host_but_this_server(self) -> None:
        hosts = frozenset({HERE, "a.test", "b.test"})
        self.assertEqual(destinations_among(hosts, "m.room.message", None, None, HERE),
                         {"a.test", "b.test"})

    def test_a_departing_members_server_learns_it(self) -> None:
        for membership in ("leave", "ban"):
            self.assertEqual(destinations_among(frozenset({HERE}), "m.room.member",
                                                "@x:gone.test", membership, HERE),
                             {"gone.test"}, membership)

    def test_a_join_or_invite_adds_no_server_of_its_own(self) -> None:
        for membership in ("join", "invite", "knock"):
            self.assertEqual(destinations_among(frozenset({HERE}), "m.room.member",
                                                "@x:new.test", membership, HERE),
                             set(), membership)

    def test_a_local_member_leaving_adds_nothing(self) -> None:
        self.assertEqual(destinations_among(frozenset({HERE}), "m.room.member",
                                            f"@me:{HERE}", "leave", HERE), set())


class FakeStore:
    """The two reads RoomDestinations makes of FederationOutboundStore, counted."""

    def __init__(self, groups: dict[int, list[str]],
                 deltas: dict[int, tuple[int | None, list[tuple[str, str]]]]) -> None:
        self.groups = groups
        self.deltas = deltas
        self.full_reads = 0

    async def joined_users_at_groups(self, groups: list[int]) -> dict[int, list[str]]:
        self.full_reads += 1
        return {g: self.groups[g] for g in groups if g in self.groups}

    async def group_member_delta(self, group: int) -> tuple[int | None, list[tuple[str, str]]]:
        return self.deltas.get(group, (None, []))


class FakeMembers:
    def __init__(self, joined: list[str]) -> None:
        self.joined = joined

    async def members(self, room_id: str) -> dict[str, tuple[str, str]]:
        return {u: ("join", "$e") for u in self.joined}


def _outbound(sender: str, group: int | None, event_type: str = "m.room.message",
              state_key: str | None = None, membership: str | None = None,
              relay_origin: str | None = None) -> OutboundEvent:
    return OutboundEvent(1, "$e", ROOM, sender, event_type, state_key, membership, group,
                         relay_origin)


def _recent(sender: str, group: int | None, event_type: str = "m.room.message",
            state_key: str | None = None, membership: str | None = None) -> Any:
    """A RecentEvent: (position, the event as the engine holds it, its state group)."""
    content = {"membership": membership} if membership is not None else {}
    return (1, SimpleNamespace(sender=sender, type=event_type, state_key=state_key,
                               content=content), group)


def _routes(groups: dict[int, list[str]], deltas: Any = None, joined: list[str] | None = None,
            denied: frozenset[str] = frozenset()) -> tuple[RoomDestinations, FakeStore]:
    store = FakeStore(groups, deltas or {})

    async def allowed(room_id: str, server: str) -> bool:
        return server not in denied

    routes = RoomDestinations(store, FakeMembers(joined or []), HERE,  # type: ignore[arg-type]
                              allowed)
    return routes, store


class RoomDestinationsTests(TestCase):
    async def test_a_local_event_goes_to_its_groups_other_hosts_but_not_denied_ones(self) -> None:
        routes, _ = _routes({1: [f"@a:{HERE}", "@b:b.test", "@c:c.test"]},
                            denied=frozenset({"c.test"}))
        self.assertEqual(await routes.of_event(_outbound(f"@a:{HERE}", 1)), {"b.test"})

    async def test_the_acl_itself_reaches_every_server_in_the_room(self) -> None:
        routes, _ = _routes({1: [f"@a:{HERE}", "@b:b.test", "@c:c.test"]},
                            denied=frozenset({"c.test"}))
        acl = _outbound(f"@a:{HERE}", 1, "m.room.server_acl", "")
        self.assertEqual(await routes.of_event(acl), {"b.test", "c.test"})

    async def test_remote_events_are_their_servers_to_send_unless_relayed(self) -> None:
        routes, _ = _routes({1: [f"@a:{HERE}", "@b:b.test", "@c:c.test"]})
        self.assertEqual(await routes.of_event(_outbound("@b:b.test", 1)), set())
        join = _outbound("@c:c.test", 1, "m.room.member", "@c:c.test", "join",
                         relay_origin="c.test")
        self.assertEqual(await routes.of_event(join), {"b.test"})

    async def test_without_a_group_the_rooms_current_members_decide(self) -> None:
        routes, store = _routes({}, joined=[f"@a:{HERE}", "@d:d.test"])
        self.assertEqual(await routes.of_event(_outbound(f"@a:{HERE}", None)), {"d.test"})
        self.assertEqual(store.full_reads, 0)

    async def test_a_group_of_joins_extends_its_previous_groups_hosts_without_a_full_read(
            self) -> None:
        routes, store = _routes({1: [f"@a:{HERE}", "@b:b.test"]},
                                {2: (1, [("@e:e.test", "join")]),
                                 3: (2, [("@b:b.test", "leave")])})
        store.groups[3] = [f"@a:{HERE}", "@e:e.test"]
        self.assertEqual(await routes.of_event(_outbound(f"@a:{HERE}", 1)), {"b.test"})
        self.assertEqual(await routes.of_event(_outbound(f"@a:{HERE}", 2)),
                         {"b.test", "e.test"})
        self.assertEqual(store.full_reads, 1)
        # A leave may take a server out: read in full.
        self.assertEqual(await routes.of_event(_outbound(f"@a:{HERE}", 3)), {"e.test"})
        self.assertEqual(store.full_reads, 2)

    async def test_a_join_adding_no_server_shares_its_previous_groups_hosts(self) -> None:
        """Groups whose joins add no server hold the previous group's own set, not an equal
        copy each (the cache keeps up to GROUP_CACHE_SIZE groups)."""
        routes, store = _routes({1: [f"@a:{HERE}", "@b:b.test"]},
                                {2: (1, [(f"@c:{HERE}", "join")]),
                                 3: (2, [("@d:b.test", "join")]),
                                 4: (3, [("@e:e.test", "join")])})
        for group in (1, 2, 3, 4):
            await routes.of_event(_outbound(f"@a:{HERE}", group))
        hosts = routes._group_hosts
        self.assertIs(hosts[2], hosts[1])
        self.assertIs(hosts[3], hosts[1])
        self.assertEqual(hosts[4], {HERE, "b.test", "e.test"})
        self.assertEqual(hosts[1], {HERE, "b.test"})
        self.assertEqual(store.full_reads, 1)

    async def test_room_hosts_for_edus_are_the_joined_servers_the_acl_allows(self) -> None:
        routes, _ = _routes({}, joined=[f"@a:{HERE}", "@b:b.test", "@c:c.test"],
                            denied=frozenset({"c.test"}))
        self.assertEqual(await routes.room_hosts(ROOM), {"b.test"})

    async def test_the_pass_and_the_read_loop_agree(self) -> None:
        """none_for_local_sends is True exactly when of_event gives every event no server,
        for groups whose hosts are known; it says False when they are not."""
        routes, _ = _routes({1: [f"@a:{HERE}"], 2: [f"@a:{HERE}", "@b:b.test"]})
        me = f"@a:{HERE}"
        cases = [
            ([_recent(me, 1)], True),
            ([_recent(me, 1), _recent(me, 2)], False),
            ([_recent(me, 1, "m.room.member", "@x:far.test", "ban")], False),
            ([_recent(me, 1, "m.room.member", f"@y:{HERE}", "leave")], True),
            ([_recent("@b:b.test", 1)], False),  # not a local send
            ([_recent(me, None)], False),  # hosts unknown without a group
        ]
        self.assertFalse(routes.none_for_local_sends([_recent(me, 1)]))  # not known yet
        for group in (1, 2):
            await routes.of_event(_outbound(me, group))
        for found, expected in cases:
            self.assertEqual(routes.none_for_local_sends(found), expected, found)
            if all(group is not None and event.sender == me for _, event, group in found):
                loop = [await routes.of_event(_outbound(
                    me, group, event.type, event.state_key, event.content.get("membership")))
                    for _, event, group in found]
                self.assertEqual(not any(loop), expected, found)

    async def test_the_pass_keeps_its_groups_among_the_recently_used(self) -> None:
        groups = {g: [f"@a:{HERE}"] for g in range(GROUP_CACHE_SIZE + 1)}
        routes, store = _routes(groups)
        for group in range(GROUP_CACHE_SIZE):
            await routes.of_event(_outbound(f"@a:{HERE}", group))
        self.assertTrue(routes.none_for_local_sends([_recent(f"@a:{HERE}", 0)]))
        await routes.of_event(_outbound(f"@a:{HERE}", GROUP_CACHE_SIZE))  # evicts group 1
        reads = store.full_reads
        self.assertTrue(routes.none_for_local_sends([_recent(f"@a:{HERE}", 0)]))
        self.assertFalse(routes.none_for_local_sends([_recent(f"@a:{HERE}", 1)]))
        self.assertEqual(store.full_reads, reads)


class SenderRoutingTests(TestCase):
    """The rule through a real sender and homeserver (tests/federation/test_sender.py's
    fixture: a fake transport, a remote member appended through the engine)."""

    async def test_destinations_follow_joins_and_a_servers_last_leave(self) -> None:
        await self._destinations_follow_joins_and_leaves(from_memory=True)

    async def test_destinations_read_back_from_storage_are_the_same(self) -> None:
        await self._destinations_follow_joins_and_leaves(from_memory=False)

    async def test_a_ban_in_a_room_no_other_server_is_in_reaches_the_banned_server(self) -> None:
        f = SenderFixture(self)
        await f.setup()
        alone = (await f.server.request("POST", V3 + "/createRoom", {}, token=f.token)).body
        room = q(alone["room_id"])
        await f.server.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/first",
                               {"msgtype": "m.text", "body": "x"}, token=f.token)
        await eventually(lambda: _async(not f.sender.pending_work()))
        banned = await f.server.request("POST", f"{V3}/rooms/{room}/ban",
                                        {"user_id": "@x:far.test"}, token=f.token)
        self.assertEqual(banned.status, 200, banned.body)
        await eventually(lambda: _async(
            "far.test" in {c[0] for c in f.transport.calls if not c[3]}))
        sent = [(p["type"], p["state_key"], p["content"]["membership"])
                for dest, _, body, failed in f.transport.calls if dest == "far.test" and not failed
                for p in body["pdus"]]
        self.assertEqual(sent, [("m.room.member", "@x:far.test", "ban")])

    async def _destinations_follow_joins_and_leaves(self, from_memory: bool) -> None:
        f = SenderFixture(self, from_memory)
        await f.setup()  # bob of remote.test has joined
        engine = f.server.hs.engine

        async def membership(user: str, value: str) -> None:
            await engine.append(f.room_id, NewEvent(user, "m.room.member",
                                                    {"membership": value}, user))

        def delivered_to(event_id: str) -> set[str]:
            return {dest for dest, _, body, failed in f.transport.calls if not failed
                    for pdu in body["pdus"] if _id(pdu) == event_id}

        async def sent_to(event_id: str, expected: set[str]) -> set[str]:
            # Each destination has its own send loop: wait for every one expected, not
            # only the first to deliver.
            await eventually(lambda: _async(expected <= delivered_to(event_id)))
            return delivered_to(event_id)

        # A message after each change: its group is the change's, whose previous group
        # the message before made the sender read (joins then extend it, leaves re-read).
        steps = [("@c:one.test", "join", {REMOTE, "one.test"}),
                 ("@c:two.test", "join", {REMOTE, "one.test", "two.test"}),
                 ("@d:two.test", "join", {REMOTE, "one.test", "two.test"}),
                 ("@c:two.test", "leave", {REMOTE, "one.test", "two.test"}),  # @d stays
                 ("@d:two.test", "leave", {REMOTE, "one.test"}),  # two.test's last member
                 ("@e:three.test", "join", {REMOTE, "one.test", "three.test"})]
        for i, (user, value, expected) in enumerate(steps):
            await membership(user, value)
            (event_id,) = await f.send(1, f"step{i}-")
            self.assertEqual(await sent_to(event_id, expected), expected, (user, value))
