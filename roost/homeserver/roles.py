"""Which process does what: the roles of this process and the stable shard maps.

Only homeserver/ knows that there may be several processes (DESIGN.md: "no other
layer knows which process it is in"): wiring asks this module whether to start
a part here, and gives the parts below plain predicates ("is this room mine?",
"is this destination mine?").

The maps are pure functions of the configuration, the same in every process
(nothing stores them: changing them only needs every process stopped at once).
A destination's sender is `federation_senders[h(destination) % n]`, with `h` the
first 8 bytes of SHA-256 (stable across processes, machines and Python versions,
unlike `hash()`). A room's writer is the server nginx's `hash $room;` picks
among the writers listed in the same order (`nginx_hash_index`): nginx then
sends a room's writes straight to its writer (contrib/nginx/roost-workers.conf),
and forwarding (room_writers.py) is only the fallback.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from roost.homeserver.config import RoostConfig

# Instance name of the one process running every role (no `workers` section).
MAIN = "main"


def stable_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def shard_of(key: str, members: list[str]) -> str:
    """The member of `members` that owns `key`, the same answer in every process."""
    return members[stable_hash(key) % len(members)]


def nginx_hash_index(key: str, count: int) -> int:
    """The server nginx's `hash KEY;` (generic hash, *not* `consistent`) tries first in
    an upstream of `count` servers of equal weight, in the order they are listed:
    ngx_http_upstream_hash_module takes ((crc32(KEY) >> 16) & 0x7fff) modulo the total
    weight (Cache::Memcached's hash; zlib's CRC-32 is nginx's). It rehashes only when
    that server is down or failing; one server is always chosen."""
    return ((zlib.crc32(key.encode("utf-8")) >> 16) & 0x7FFF) % count


def writer_of_room(room_id: str, writers: list[str] | tuple[str, ...]) -> str:
    """A room's event writer: the one nginx routes the room's writes to when the
    writers' upstream lists them in `workers.event_writers` order."""
    return writers[nginx_hash_index(room_id, len(writers))]


@dataclass(frozen=True)
class WriterAddress:
    name: str
    url: str  # http://host:port of its internal listener


@dataclass(frozen=True)
class Roles:
    """This process's roles and the maps it routes by."""

    instance: str
    roles: frozenset[str]
    event_writers: tuple[str, ...]
    federation_senders: tuple[str, ...]
    writer_urls: dict[str, str]
    shared_secret: str | None

    @classmethod
    def from_config(cls, config: RoostConfig) -> Roles:
        workers = config.workers
        if config.worker is None:
            return cls(MAIN, config.roles, (MAIN,), (MAIN,), {}, None)
        urls = {}
        for name in workers.event_writers:
            internal = workers.instances[name].internal
            urls[name] = f"http://{internal.host or internal.bind_address}:{internal.port}"
        return cls(config.worker, config.roles, tuple(workers.event_writers),
                   tuple(workers.federation_senders), urls, workers.shared_secret)

    @property
    def single_process(self) -> bool:
        return self.writer_urls == {}

    def runs(self, role: str) -> bool:
        return role in self.roles

    def writer_of(self, room_id: str) -> str:
        return writer_of_room(room_id, self.event_writers)

    def writes_room(self, room_id: str) -> bool:
        """Whether this process appends to `room_id` (else it forwards to its writer)."""
        return self.single_process or self.writer_of(room_id) == self.instance

    def sends_to(self, destination: str) -> bool:
        """Whether this process's federation sender serves `destination`."""
        if len(self.federation_senders) == 1:
            return self.federation_senders[0] == self.instance
        return shard_of(destination, list(self.federation_senders)) == self.instance

    def writer_for_new_room(self, creator: str) -> str:
        """The writer that builds a room `creator` makes here (spread by creator; the writer
        picks an id that maps back to itself)."""
        if self.instance in self.event_writers:
            return self.instance
        return shard_of(creator, list(self.event_writers))
