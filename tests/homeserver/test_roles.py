"""Role selection and the stable shard maps: every process computes the same owner."""

from __future__ import annotations

import copy
import hashlib
from collections import Counter

from twisted.trial.unittest import TestCase

from roost.homeserver.config import parse_config
from roost.homeserver.roles import MAIN, Roles, shard_of, stable_hash
from tests.homeserver.test_config_workers import BASE


def two_writers() -> dict:
    raw = copy.deepcopy(BASE)
    instances = raw["workers"]["instances"]
    instances["writer2"] = {"roles": ["event_writer"],
                            "internal": {"port": 9102, "host": "10.0.0.2"}}
    instances["fed2"] = {"roles": ["federation_sender"]}
    raw["workers"]["event_writers"] = ["writer1", "writer2"]
    raw["workers"]["federation_senders"] = ["fed1", "fed2"]
    return raw


class RolesTests(TestCase):
    def test_the_hash_is_stable_across_processes_and_versions(self) -> None:
        # SHA-256's first 8 bytes: a fixed value, unlike Python's salted hash().
        digest = hashlib.sha256(b"!room:example.org").digest()
        self.assertEqual(stable_hash("!room:example.org"), int.from_bytes(digest[:8], "big"))
        self.assertEqual(shard_of("!room:example.org", ["a"]), "a")

    def test_rooms_spread_over_the_writers_and_each_has_one(self) -> None:
        config = parse_config(two_writers())
        views = [Roles.from_config(config.for_worker(n)) for n in ("writer1", "writer2", "reader1")]
        owners = Counter()
        for i in range(2000):
            room = f"!r{i}:example.org"
            writers = [r.instance for r in views[:2] if r.writes_room(room)]
            self.assertEqual(len(writers), 1)
            self.assertFalse(views[2].writes_room(room))
            self.assertEqual({v.writer_of(room) for v in views}, set(writers))
            owners[writers[0]] += 1
        self.assertGreater(min(owners.values()), 800)  # about half each

    def test_destinations_spread_over_the_senders(self) -> None:
        config = parse_config(two_writers())
        fed1, fed2 = (Roles.from_config(config.for_worker(n)) for n in ("fed1", "fed2"))
        for i in range(200):
            self.assertNotEqual(fed1.sends_to(f"s{i}.org"), fed2.sends_to(f"s{i}.org"))

    def test_writer_urls_use_the_advertised_host(self) -> None:
        roles = Roles.from_config(parse_config(two_writers()).for_worker("reader1"))
        self.assertEqual(roles.writer_urls, {"writer1": "http://127.0.0.1:9101",
                                             "writer2": "http://10.0.0.2:9102"})
        self.assertEqual(roles.shared_secret, "s3cret")
        self.assertEqual(roles.roles, frozenset({"client", "media"}))

    def test_one_process_writes_every_room_and_sends_everywhere(self) -> None:
        roles = Roles.from_config(parse_config({"server_name": "example.org"}))
        self.assertEqual(roles.instance, MAIN)
        self.assertTrue(roles.single_process)
        self.assertTrue(roles.writes_room("!any:example.org"))
        self.assertTrue(roles.sends_to("other.org"))

    def test_a_writer_builds_its_own_new_rooms_and_others_spread_them(self) -> None:
        config = parse_config(two_writers())
        writer2 = Roles.from_config(config.for_worker("writer2"))
        self.assertEqual(writer2.writer_for_new_room("@a:example.org"), "writer2")
        reader = Roles.from_config(config.for_worker("reader1"))
        chosen = {reader.writer_for_new_room(f"@u{i}:example.org") for i in range(50)}
        self.assertEqual(chosen, {"writer1", "writer2"})
