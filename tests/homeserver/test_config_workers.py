"""The `workers` section: instances, their roles and listeners, and every mistake named by
its YAML path."""

from __future__ import annotations

import copy
from typing import Any

from twisted.trial.unittest import TestCase

from roost.homeserver.config import ROLES, ConfigError, parse_config

BASE: dict[str, Any] = {
    "server_name": "example.org",
    "redis": {"enabled": True},
    "listeners": {"client": {"port": 8008, "x_forwarded": True}},
    "workers": {
        "shared_secret": "s3cret",
        "instances": {
            "writer1": {"roles": ["event_writer", "pusher", "appservice", "background"],
                        "internal": {"port": 9101}},
            "reader1": {"roles": ["client", "media"], "listeners": {"client": {"port": 8101}}},
            "fed1": {"roles": ["federation_inbound", "federation_sender"]},
        },
        "event_writers": ["writer1"],
        "federation_senders": ["fed1"],
    },
}


def with_workers(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["workers"].update(changes)
    return raw


class WorkersConfigTests(TestCase):
    def assertConfigError(self, raw: Any, fragment: str) -> None:
        with self.assertRaises(ConfigError) as cm:
            parse_config(raw)
        self.assertIn(fragment, str(cm.exception))

    def test_no_workers_section_is_one_process_with_every_role(self) -> None:
        config = parse_config({"server_name": "example.org"})
        self.assertIsNone(config.worker)
        self.assertEqual(config.roles, frozenset(ROLES))
        self.assertIs(config.for_worker(None), config)
        self.assertIs(config.for_tool(), config)

    def test_an_instance_gets_its_roles_and_its_listeners_over_the_shared_ones(self) -> None:
        config = parse_config(copy.deepcopy(BASE)).for_worker("reader1")
        self.assertEqual(config.worker, "reader1")
        self.assertEqual(config.roles, frozenset({"client", "media"}))
        self.assertEqual(config.listeners.client.port, 8101)
        self.assertTrue(config.listeners.client.x_forwarded)  # from the top-level listeners
        writer = parse_config(copy.deepcopy(BASE)).for_worker("writer1")
        self.assertEqual(writer.listeners.client.port, 8008)

    def test_instances_need_a_name_on_the_command_line(self) -> None:
        config = parse_config(copy.deepcopy(BASE))
        with self.assertRaises(ConfigError) as cm:
            config.for_worker(None)
        self.assertIn("--worker", str(cm.exception))
        with self.assertRaises(ConfigError) as cm:
            config.for_worker("nobody")
        self.assertIn("workers.instances.nobody: no such instance", str(cm.exception))
        self.assertEqual(config.for_tool().roles, frozenset())

    def test_unknown_role_is_named_with_its_path(self) -> None:
        raw = copy.deepcopy(BASE)
        raw["workers"]["instances"]["reader1"]["roles"] = ["client", "sync"]
        self.assertConfigError(raw, "workers.instances.reader1.roles[1]: unknown role 'sync'")

    def test_instance_listener_mistakes_are_named_with_the_instance_path(self) -> None:
        raw = copy.deepcopy(BASE)
        raw["workers"]["instances"]["reader1"]["listeners"] = {"client": {"port": "x"}}
        self.assertConfigError(raw, "workers.instances.reader1.listeners.client.port")
        raw["workers"]["instances"]["reader1"]["listeners"] = {"federation": {"enabled": True}}
        self.assertConfigError(
            raw, "workers.instances.reader1.listeners.federation.tls_certificate_path: required")

    def test_each_singleton_follower_runs_in_exactly_one_instance(self) -> None:
        raw = copy.deepcopy(BASE)
        raw["workers"]["instances"]["reader1"]["roles"].append("pusher")
        self.assertConfigError(raw, "role pusher must be in exactly one instance (found in 2")
        raw = copy.deepcopy(BASE)
        raw["workers"]["instances"]["writer1"]["roles"].remove("background")
        self.assertConfigError(raw, "role background must be in exactly one instance (found in 0")

    def test_shard_lists_name_exactly_the_instances_with_the_role(self) -> None:
        self.assertConfigError(with_workers(event_writers=["writer1", "ghost"]),
                               "workers.event_writers[1]: no instance named 'ghost'")
        self.assertConfigError(with_workers(event_writers=["reader1"]),
                               "workers.event_writers: must list exactly the instances with role")
        self.assertConfigError(with_workers(event_writers=[]), "workers.event_writers")
        self.assertConfigError(with_workers(federation_senders=["fed1", "fed1"]),
                               "workers.federation_senders[1]: fed1 is listed twice")

    def test_writers_need_an_internal_port_and_everyone_a_secret(self) -> None:
        raw = copy.deepcopy(BASE)
        del raw["workers"]["instances"]["writer1"]["internal"]
        self.assertConfigError(raw, "workers.instances.writer1.internal.port: an event writer")
        self.assertConfigError(with_workers(shared_secret=None), "workers.shared_secret: required")

    def test_instances_need_redis(self) -> None:
        raw = copy.deepcopy(BASE)
        raw["redis"]["enabled"] = False
        self.assertConfigError(raw, "redis.enabled: must be true with workers.instances")

    def test_shard_lists_without_instances_are_refused(self) -> None:
        self.assertConfigError({"server_name": "example.org",
                                "workers": {"event_writers": ["a"]}},
                               "workers.event_writers: needs workers.instances")

    def test_instance_names_are_plain(self) -> None:
        raw = copy.deepcopy(BASE)
        raw["workers"]["instances"]["bad name"] = {"roles": ["client"]}
        self.assertConfigError(raw, "workers.instances.bad name: a name is 1-64 of")
