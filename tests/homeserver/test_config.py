"""Configuration loading: the shipped file loads, and every mistake names its key."""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from roost.homeserver.config import ConfigError, load_config, parse_config
from roost.homeserver.config_template import render_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ShippedConfigTests(TestCase):
    def test_repository_homeserver_yaml_loads(self) -> None:
        config = load_config(os.path.join(REPO, "homeserver.yaml"))
        self.assertEqual(config.server_name, "localhost")
        self.assertEqual(config.listeners.client.port, 8008)
        self.assertTrue(config.registration.enabled)
        self.assertIsNone(config.database.dsn)
        self.assertFalse(config.listeners.federation.enabled)
        self.assertEqual(config.tokens.access_token_lifetime, 15 * 60_000)
        self.assertEqual(config.tokens.refresh_token_lifetime, 7 * 86_400_000)

    def test_generated_template_loads(self) -> None:
        path = os.path.join(self.mktemp() + ".yaml")
        with open(path, "w") as f:
            f.write(render_config("chat.example.org", data_dir="./d", client_port=9000,
                                  registration_enabled=False, tls_cert=None, tls_key=None))
        config = load_config(path)
        self.assertEqual(config.server_name, "chat.example.org")
        self.assertEqual(config.listeners.client.port, 9000)
        self.assertFalse(config.registration.enabled)


class ConfigErrorTests(TestCase):
    def assertConfigError(self, raw: object, fragment: str) -> None:
        with self.assertRaises(ConfigError) as cm:
            parse_config(raw)
        self.assertIn(fragment, str(cm.exception))
        self.assertEqual(len(str(cm.exception).splitlines()), 1)

    def test_unknown_key_is_named_with_its_path(self) -> None:
        self.assertConfigError({"server_name": "a", "listeners": {"client": {"prot": 1}}},
                               "listeners.client.prot: unknown configuration key")
        self.assertConfigError({"server_name": "a", "colour": "blue"}, "colour")

    def test_wrong_types_are_named(self) -> None:
        self.assertConfigError({"server_name": "a", "listeners": {"client": {"port": "80x"}}},
                               "listeners.client.port")
        self.assertConfigError({"server_name": "a", "registration": {"enabled": "yes"}},
                               "registration.enabled")
        self.assertConfigError({"server_name": "a", "database": []}, "database")
        self.assertConfigError({"server_name": "a", "tokens": {"access_token_lifetime": "soon"}},
                               "tokens.access_token_lifetime")

    def test_default_room_version_must_be_one_of_1_to_12(self) -> None:
        self.assertConfigError({"server_name": "a", "rooms": {"default_version": "13"}},
                               "rooms.default_version")
        for version in ("1", "9", "12"):
            config = parse_config({"server_name": "a", "rooms": {"default_version": version}})
            self.assertEqual(config.rooms.default_version, version)

    def test_missing_server_name(self) -> None:
        self.assertConfigError({}, "server_name: missing required configuration key")

    def test_invalid_values(self) -> None:
        self.assertConfigError({"server_name": "bad name!"}, "server_name")
        self.assertConfigError({"server_name": "a", "logging": {"level": "LOUD"}}, "logging.level")
        self.assertConfigError({"server_name": "a", "listeners": {"federation": {"enabled": True}}},
                               "listeners.federation.tls_certificate_path")

    def test_missing_file_and_bad_yaml(self) -> None:
        with self.assertRaises(ConfigError) as cm:
            load_config("/nonexistent/homeserver.yaml")
        self.assertIn("config file not found", str(cm.exception))
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("server_name: [unclosed\n")
        with self.assertRaises(ConfigError) as cm:
            load_config(path)
        self.assertIn("not valid YAML", str(cm.exception))

    def test_durations(self) -> None:
        config = parse_config({"server_name": "a", "tokens": {"access_token_lifetime": "2h",
                                                              "refresh_token_lifetime": 5000}})
        self.assertEqual(config.tokens.access_token_lifetime, 7_200_000)
        self.assertEqual(config.tokens.refresh_token_lifetime, 5000)

    def test_relative_paths_follow_the_config_file(self) -> None:
        config = parse_config({"server_name": "a", "data_dir": "./data"}, "/etc/roost")
        self.assertEqual(config.signing_key_file, "/etc/roost/data/a.signing.key")
        self.assertEqual(config.token_secret_file, "/etc/roost/data/token.secret")
