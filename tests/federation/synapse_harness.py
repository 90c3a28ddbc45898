"""A real Synapse beside Roost on loopback, for interoperability tests.

Synapse runs from its own virtualenv (`.venv-synapse`, made by `make test`
with the pinned `matrix-synapse`), as a separate process with its own
PostgreSQL database, a TLS federation listener named `localhost:<port>` (an
explicit port: Synapse and Roost connect straight to it, no DNS) and a plain
client listener. The settings follow ../shared/notes/synapse-on-loopback.md:
loopback allowed as a destination, certificates not checked, no matrix.org key
server, generous rate limits, short federation retry intervals.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import psycopg2
from twisted.internet import threads
from twisted.trial.unittest import SkipTest, TestCase

from roost.homeserver.tlsgen import write_self_signed
from tests.postgres_harness import admin_dsn

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYNAPSE_PYTHON = os.path.join(REPO, ".venv-synapse", "bin", "python")
_BIG = {"per_second": 1000, "burst_count": 1000}


@dataclass
class SynapseNode:
    name: str
    federation_port: int
    client_url: str
    process: subprocess.Popen[bytes]
    folder: str

    def client(self, method: str, path: str, body: Any = None, token: str | None = None
               ) -> tuple[int, Any]:
        """A blocking client-API call (run it in a thread from tests)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.client_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def register(self, localpart: str) -> tuple[str, str]:
        status, body = self.client("POST", "/_matrix/client/v3/register", {
            "username": localpart, "password": "pw-" + localpart,
            "auth": {"type": "m.login.dummy"}})
        assert status == 200, (status, body)
        return body["user_id"], body["access_token"]


@dataclass
class SynapseUser:
    """A user of a test Synapse: its client API called from a thread, with the user's token."""

    node: SynapseNode
    user_id: str
    token: str

    async def request(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        return await threads.deferToThread(self.node.client, method, path, body, self.token)

    async def sees_joined(self, room_id: str, user_id: str) -> bool:
        """Whether this user's Synapse lists `user_id` among the room's joined members."""
        status, members = await self.request(
            "GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/joined_members")
        return status == 200 and user_id in members.get("joined", {})


async def synapse_user(node: SynapseNode, localpart: str) -> SynapseUser:
    """Register `localpart` on the test Synapse."""
    user_id, token = await threads.deferToThread(node.register, localpart)
    return SynapseUser(node, user_id, token)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(folder: str, name: str, fed_port: int, client_port: int, database: str) -> dict:
    pg = psycopg2.extensions.parse_dsn(admin_dsn())
    limits = {key: _BIG for key in ("rc_message", "rc_registration", "rc_joins_per_room",
                                    "rc_invites", "rc_room_creation")}
    return {
        "server_name": name,
        "pid_file": os.path.join(folder, "homeserver.pid"),
        "listeners": [
            {"port": fed_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": True,
             "resources": [{"names": ["federation"]}]},
            {"port": client_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
             "x_forwarded": False, "resources": [{"names": ["client"]}]},
        ],
        "tls_certificate_path": os.path.join(folder, "tls", "tls.crt"),
        "tls_private_key_path": os.path.join(folder, "tls", "tls.key"),
        "database": {"name": "psycopg2", "args": {
            "user": pg.get("user", "postgres"), "host": pg.get("host", "127.0.0.1"),
            "port": int(pg.get("port", 5432)), "database": database, "cp_min": 1, "cp_max": 5}},
        "media_store_path": os.path.join(folder, "media"),
        "signing_key_path": os.path.join(folder, "signing.key"),
        "report_stats": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_verify_certificates": False,
        "federation_ip_range_blacklist": [],
        "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "macaroon_secret_key": uuid.uuid4().hex,
        "form_secret": uuid.uuid4().hex,
        "rc_login": {"address": _BIG, "account": _BIG, "failed_attempts": _BIG},
        "rc_joins": {"local": _BIG, "remote": _BIG},
        "rc_federation": {"window_size": 1000, "sleep_limit": 1000, "reject_limit": 1000},
        "federation": {"destination_min_retry_interval": "2s",
                       "destination_max_retry_interval": "10s"},
        **limits,
    }


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied: a mapping in both is merged, anything else replaced."""
    out = dict(base)
    for key, value in overrides.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merged(base[key], value) if both else value
    return out


def _create_database(name: str) -> None:
    conn = psycopg2.connect(admin_dsn())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
                    " TEMPLATE template0")
    conn.close()


def _drop_database(name: str) -> None:
    conn = psycopg2.connect(admin_dsn())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def _start(folder: str, overrides: dict[str, Any] | None = None) -> SynapseNode:
    """Start Synapse in `folder`; `overrides` are merged into the config, key by key in
    nested mappings (benchmarks raise the rate limits and quieten the log with it)."""
    fed_port, client_port = _free_port(), _free_port()
    name = f"localhost:{fed_port}"
    database = f"synapse_test_{uuid.uuid4().hex[:12]}"
    _create_database(name=database)
    write_self_signed(folder, "tls", "localhost")
    config_path = os.path.join(folder, "homeserver.yaml")
    with open(config_path, "w") as f:
        config = _config(folder, name, fed_port, client_port, database)
        json.dump(_merged(config, overrides or {}), f)  # JSON is YAML
    # trial's workers export PYTHONPATH with Roost's own site-packages: Synapse must
    # see only its virtualenv.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    keys = subprocess.run([SYNAPSE_PYTHON, "-m", "synapse.app.homeserver", "-c", config_path,
                           "--generate-keys"], capture_output=True, cwd=folder, env=env)
    if keys.returncode != 0:
        raise RuntimeError(f"synapse --generate-keys failed: {keys.stderr.decode()[-2000:]}")
    log = open(os.path.join(folder, "synapse.log"), "wb")  # noqa: SIM115
    process = subprocess.Popen([SYNAPSE_PYTHON, "-m", "synapse.app.homeserver", "-c", config_path],
                               cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env)
    node = SynapseNode(name, fed_port, f"http://127.0.0.1:{client_port}", process, folder)
    node.database = database  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"synapse exited; see {folder}/synapse.log")
        try:
            with urllib.request.urlopen(node.client_url + "/_matrix/client/versions", timeout=2):
                return node
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("synapse did not start")


def _stop(node: SynapseNode) -> None:
    node.process.terminate()
    try:
        node.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        node.process.kill()
        node.process.wait()
    _drop_database(node.database)  # type: ignore[attr-defined]


async def start_synapse(testcase: TestCase) -> SynapseNode:
    """Start a Synapse for this test; stopped (and its database dropped) at cleanup."""
    if not os.path.exists(SYNAPSE_PYTHON):
        raise SkipTest("no .venv-synapse: `make test` installs the pinned matrix-synapse there")
    folder = os.path.abspath(testcase.mktemp())
    os.makedirs(folder)
    node = await threads.deferToThread(_start, folder)
    testcase.addCleanup(lambda: threads.deferToThread(_stop, node))
    return node
