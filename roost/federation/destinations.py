"""Which servers get what of a room: the one rule for an event's destinations, and a
room's hosts for its EDUs.

An event goes to the servers of the members joined in the state after it, and to a
departing member's own server (a kicked or banned server learns it), never to this
server, to the server that handed it to us (`relay_origin`) or to a server the room's
ACL denies. The sender's read loop applies it to every event it reads; its pass for
local sends in rooms no other server is in asks only whether it gives no server at all.
Both decide here, by `destinations_among`, so the two cannot drift apart.

The hosts after an event are its state group's, kept for the most recently used
`GROUP_CACHE_SIZE` groups: the next message of a room is in the same group, and a join
extends its previous group's hosts instead of a read of the room's whole membership.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

from roost.rooms.engine_types import RecentEvent, membership_of
from roost.storage.federation_outbound import FederationOutboundStore, OutboundEvent
from roost.storage.room_state import RoomStateStore

GROUP_CACHE_SIZE = 10_000


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def destinations_among(hosts: frozenset[str], event_type: str, state_key: str | None,
                       membership: str | None, server_name: str) -> set[str]:
    """The servers an event goes to among the room's `hosts` after it, before the relay
    origin and the ACL are taken out: every one but this server, and a departing
    member's own (a kicked or banned server learns it). The read loop and the pass for
    rooms no other server is in decide by this one rule."""
    found = set(hosts)
    if event_type == "m.room.member" and state_key and membership in ("leave", "ban"):
        found.add(server_of(state_key))
    found.discard(server_name)
    return found


class RoomDestinations:
    """The rule applied: an event's destinations, and a room's hosts for its EDUs."""

    def __init__(self, store: FederationOutboundStore, members: RoomStateStore,
                 server_name: str,
                 server_allowed: Callable[[str, str], Awaitable[bool]] | None) -> None:
        """`server_allowed(room_id, server)` is the room's server ACL (the access module's):
        nothing of a room, PDU or EDU, goes to a server its ACL denies."""
        self._store = store
        self._members = members
        self._server_name = server_name
        self._server_allowed = server_allowed
        self._group_hosts: OrderedDict[int, frozenset[str]] = OrderedDict()

    async def of_event(self, event: OutboundEvent) -> set[str]:
        """Servers to send an event to: those joined after it, plus a departing member's.

        Local events go out; so do joins and leaves another server made through
        us (served /send_join, /send_leave: `relay_origin`), since that server
        handed them to us alone. Other remote events are their servers' to send.
        """
        origin = event.relay_origin
        if server_of(event.sender) != self._server_name and origin is None:
            return set()
        hosts = destinations_among(await self._hosts_at(event), event.type, event.state_key,
                                   event.membership, self._server_name)
        hosts.discard(origin)
        if event.type == "m.room.server_acl":
            return hosts  # every server in the room learns the ACL, to uphold it
        return await self._acl_filter(event.room_id, hosts)

    def none_for_local_sends(self, found: list[RecentEvent]) -> bool:
        """Whether `found` are all local sends, each in a state group whose hosts are known
        and give it no destination: what `of_event` would answer for each without a
        read, as the ACL filter only removes. When so, their groups count as used, as
        `of_event` would have made them."""
        group_hosts, server_name = self._group_hosts, self._server_name
        for _, event, group in found:
            if server_of(event.sender) != server_name:
                return False  # not a local send: not for this pass to judge
            hosts = group_hosts.get(group) if group is not None else None
            if hosts is None or destinations_among(
                    hosts, event.type, event.state_key, membership_of(event), server_name):
                return False
        for _, _, group in found:  # as `_hosts_at` would have: recently used
            group_hosts.move_to_end(group)  # type: ignore[arg-type]
        return True

    async def room_hosts(self, room_id: str) -> set[str]:
        """The other servers with a member joined in the room now, that its ACL allows:
        where the room's EDUs go."""
        hosts = {server_of(u) for u in await self._joined(room_id)} - {self._server_name}
        return await self._acl_filter(room_id, hosts)

    async def _joined(self, room_id: str) -> list[str]:
        members = await self._members.members(room_id)
        return [user for user, (membership, _) in members.items() if membership == "join"]

    async def _acl_filter(self, room_id: str, hosts: set[str]) -> set[str]:
        if self._server_allowed is None:
            return hosts
        return {h for h in hosts if await self._server_allowed(room_id, h)}

    async def _hosts_at(self, event: OutboundEvent) -> frozenset[str]:
        group = event.state_group
        if group is None:
            return frozenset(server_of(u) for u in await self._joined(event.room_id))
        hosts = self._group_hosts.get(group)
        if hosts is None:
            hosts = await self._hosts_after_joins(group)
        if hosts is None:
            found = await self._store.joined_users_at_groups([group])
            hosts = frozenset(server_of(u) for u in found.get(group, []))
        self._group_hosts[group] = hosts
        self._group_hosts.move_to_end(group)
        while len(self._group_hosts) > GROUP_CACHE_SIZE:
            self._group_hosts.popitem(last=False)
        return hosts

    async def _hosts_after_joins(self, group: int) -> frozenset[str] | None:
        """The group's hosts from its previous group's, when it only adds joins; else None.

        A room's state changes mostly by joins, each in a new group: reading the
        whole chain for each would cost the room's size per join (quadratic over
        a room filling up). A leave may take a server out only if it was that
        server's last member, which needs the full read."""
        prev, changes = await self._store.group_member_delta(group)
        if prev is None or prev not in self._group_hosts:
            return None
        if any(membership != "join" for _, membership in changes):
            return None
        before = self._group_hosts[prev]
        joined = {server_of(user) for user, _ in changes}
        # Most joins add no server: the previous group's own set then, not an equal copy
        # (216 bytes a group for a room of one server, up to GROUP_CACHE_SIZE groups).
        return before if joined <= before else before | joined
