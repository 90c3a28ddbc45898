"""The `roost` command and the twistd plugin, run as real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import yaml
from twisted.internet import reactor, threads
from twisted.trial.unittest import TestCase

from roost.storage.database import Database
from roost.storage.registration_tokens import RegistrationTokenStore
from tests.postgres_harness import fresh_database

ROOST = [sys.executable, "-m", "roost.homeserver.cli"]
TWISTD = [os.path.join(os.path.dirname(sys.executable), "twistd"), "-n", "--pidfile=", "roost"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], cwd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": REPO})


def _serve_until_versions(args: list[str], cwd: str, port: int, timeout: float = 90) -> dict:
    """Start a server process, wait for /versions, stop it with SIGTERM; return what it said."""
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONPATH": REPO})
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_matrix/client/versions",
                                            timeout=2) as resp:
                    return json.loads(resp.read())
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read() if proc.stdout else ""
                    raise AssertionError(f"server did not come up: {out}") from None
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class CliTests(TestCase):
    def _generate(self, folder: str, port: int, dsn: str | None) -> str:
        result = _run(ROOST + ["generate-config", "--server-name", "cli.test", "--port", str(port),
                               "--enable-registration"], folder)
        self.assertEqual(result.returncode, 0, result.stderr)
        path = os.path.join(folder, "homeserver.yaml")
        if dsn is not None:
            with open(path) as f:
                text = f.read()
            with open(path, "w") as f:
                f.write(text.replace("dsn: null", f"dsn: {json.dumps(dsn)}"))
        return path

    async def test_generate_config_writes_a_loadable_config_and_synapse_format_key(self) -> None:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = await threads.deferToThread(self._generate, folder, 8008, None)
        with open(path) as f:
            raw = yaml.safe_load(f)
        self.assertEqual(raw["server_name"], "cli.test")
        with open(os.path.join(folder, "data", "cli.test.signing.key")) as f:
            alg, version, seed = f.read().split()
        self.assertEqual(alg, "ed25519")
        self.assertTrue(version)
        self.assertEqual(len(seed), 43)  # 32 bytes, unpadded base64
        again = await threads.deferToThread(
            _run, ROOST + ["generate-config", "--server-name", "cli.test"], folder)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("exists", again.stderr)

    async def test_register_user_and_migrate_commands(self) -> None:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        dsn = await fresh_database(self)
        await threads.deferToThread(self._generate, folder, _free_port(), dsn)
        migrated = await threads.deferToThread(_run, ROOST + ["migrate"], folder)
        self.assertEqual(migrated.returncode, 0, migrated.stderr)
        made = await threads.deferToThread(
            _run, ROOST + ["register-user", "--user", "boss", "--password", "pw", "--admin"], folder)
        self.assertEqual(made.returncode, 0, made.stderr)
        self.assertIn("@boss:cli.test (admin)", made.stdout)
        twice = await threads.deferToThread(
            _run, ROOST + ["register-user", "--user", "boss", "--password", "pw"], folder)
        self.assertEqual(twice.returncode, 1)
        self.assertIn("already taken", twice.stderr)

    async def test_registration_token_command_stores_a_token(self) -> None:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        dsn = await fresh_database(self)
        await threads.deferToThread(self._generate, folder, _free_port(), dsn)
        made = await threads.deferToThread(
            _run, ROOST + ["registration-token", "--token", "welcome-1", "--uses", "2"], folder)
        self.assertEqual(made.returncode, 0, made.stderr)
        self.assertEqual(made.stdout.strip(), "welcome-1")
        again = await threads.deferToThread(
            _run, ROOST + ["registration-token", "--token", "welcome-1"], folder)
        self.assertEqual(again.returncode, 1)
        self.assertIn("exists already", again.stderr)
        bad = await threads.deferToThread(
            _run, ROOST + ["registration-token", "--token", "no spaces!"], folder)
        self.assertEqual(bad.returncode, 1)
        random = await threads.deferToThread(_run, ROOST + ["registration-token"], folder)
        self.assertEqual(len(random.stdout.strip()), 16, random.stderr)
        db = Database(reactor, dsn, 1, 1)
        try:
            stored = await RegistrationTokenStore(db).get("welcome-1")
        finally:
            db.close()
        assert stored is not None
        self.assertEqual((stored.uses_allowed, stored.completed, stored.expiry_time), (2, 0, None))

    async def test_bad_config_stops_with_one_line_naming_the_key(self) -> None:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        with open(os.path.join(folder, "homeserver.yaml"), "w") as f:
            f.write("server_name: x\nlisteners:\n  client:\n    prot: 8008\n")
        for args in (ROOST + ["run", "-c", "homeserver.yaml"],
                     TWISTD + ["-c", "homeserver.yaml"]):
            result = await threads.deferToThread(_run, args, folder)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("listeners.client.prot: unknown configuration key", result.stderr)
        missing = await threads.deferToThread(_run, ROOST + ["run", "-c", "nope.yaml"], folder)
        self.assertIn("config file not found: nope.yaml", missing.stderr)

    async def test_roost_run_serves_versions_on_the_embedded_postgres(self) -> None:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        port = _free_port()
        await threads.deferToThread(self._generate, folder, port, None)
        body = await threads.deferToThread(
            _serve_until_versions, ROOST + ["run", "-c", "homeserver.yaml"], folder, port)
        self.assertIn("v1.12", body["versions"])
        # Stopping the server stopped its embedded PostgreSQL too.
        pid_file = os.path.join(folder, "data", "postgres", "postmaster.pid")
        self.assertFalse(os.path.exists(pid_file), "embedded PostgreSQL still running")

    async def test_twistd_plugin_serves_versions(self) -> None:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        port = _free_port()
        dsn = await fresh_database(self)
        await threads.deferToThread(self._generate, folder, port, dsn)
        body = await threads.deferToThread(
            _serve_until_versions, TWISTD + ["-c", "homeserver.yaml"], folder, port)
        self.assertIn("versions", body)


class WorkerOptionTests(TestCase):
    """`--worker NAME` for `roost run` and the twistd plugin alike."""

    def _config(self, folder: str, dsn: str, port: int) -> None:
        raw = {
            "server_name": "cli.test", "data_dir": "./data",
            "database": {"dsn": dsn}, "redis": {"enabled": True,
                                                "key_prefix": f"roost-cli-{port}:"},
            "passwords": {"bcrypt_rounds": 4},
            "workers": {"shared_secret": "secret-for-tests", "instances": {
                "all": {"roles": ["client", "event_writer", "federation_inbound",
                                  "federation_sender", "media", "pusher", "appservice",
                                  "background"],
                        "listeners": {"client": {"port": port}},
                        "internal": {"port": _free_port()}}},
                "event_writers": ["all"], "federation_senders": ["all"]},
        }
        with open(os.path.join(folder, "homeserver.yaml"), "w") as f:
            yaml.safe_dump(raw, f)

    async def test_an_instance_runs_under_roost_run_and_twistd(self) -> None:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        port = _free_port()
        self._config(folder, await fresh_database(self), port)
        for command in (ROOST + ["run", "-c", "homeserver.yaml", "--worker", "all"],
                        TWISTD + ["-c", "homeserver.yaml", "--worker", "all"]):
            body = await threads.deferToThread(_serve_until_versions, command, folder, port)
            self.assertIn("versions", body)

    async def test_an_unknown_or_missing_instance_stops_with_one_line(self) -> None:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        self._config(folder, await fresh_database(self), _free_port())
        for args in (ROOST + ["run", "-c", "homeserver.yaml", "--worker", "ghost"],
                     TWISTD + ["-c", "homeserver.yaml", "--worker", "ghost"]):
            result = await threads.deferToThread(_run, args, folder)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("workers.instances.ghost: no such instance (known: all)",
                          result.stderr)
        bare = await threads.deferToThread(_run, ROOST + ["run", "-c", "homeserver.yaml"],
                                           folder)
        self.assertIn("name one with --worker", bare.stderr)
