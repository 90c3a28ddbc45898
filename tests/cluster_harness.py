"""Several real Roost processes on one throwaway PostgreSQL database and one Redis (under
a throwaway key prefix), started with `roost run --worker NAME` from one configuration
file, as an operator would (docs/deployment.md, "Several processes").

Each instance is a child process on loopback ports; the harness waits until each
listens, and stops them at cleanup (SIGTERM, then SIGKILL after a grace period).
`kill(name)` sends SIGKILL for the fault tests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, protocol, reactor, task
from twisted.trial.unittest import TestCase

from roost.homeserver.tlsgen import write_self_signed
from tests.postgres_harness import fresh_database

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_UNLIMITED = {"per_second": 1000.0, "burst": 1000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Child(protocol.ProcessProtocol):
    def __init__(self, log_path: str) -> None:
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._log = open(log_path, "ab", buffering=0)  # noqa: SIM115 (closed when it ends)

    def outReceived(self, data: bytes) -> None:
        self._log.write(data)

    def errReceived(self, data: bytes) -> None:
        self._log.write(data)

    def processEnded(self, reason: object) -> None:
        self._log.close()
        self.ended.callback(None)


@dataclass
class Instance:
    name: str
    roles: list[str]
    client_port: int | None = None
    federation_port: int | None = None
    internal_port: int | None = None
    process: Any = None
    child: _Child | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def ports(self) -> list[int]:
        return [p for p in (self.client_port, self.federation_port, self.internal_port) if p]


@dataclass
class Cluster:
    folder: str
    config_path: str
    server_name: str
    instances: dict[str, Instance] = field(default_factory=dict)
    tls_cert: str = ""
    tls_key: str = ""
    raw: dict[str, Any] = field(default_factory=dict)  # the configuration written
    own_config: dict[str, str] = field(default_factory=dict)  # instance -> its own file

    def configure(self, name: str, **overrides: Any) -> None:
        """Start instance `name` from now on with its own copy of the configuration,
        `overrides` merged in (e.g. a database or Redis reached through a proxy)."""
        raw = dict(self.raw)
        for key, value in overrides.items():
            raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) else value
        path = os.path.join(self.folder, f"homeserver-{name}.yaml")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(raw, f, indent=1)
        self.own_config[name] = path

    def log(self, name: str) -> str:
        with open(os.path.join(self.folder, f"{name}.log"), encoding="utf-8",
                  errors="replace") as f:
            return f.read()

    async def start(self, name: str) -> None:
        """Start (or restart) instance `name` and wait until it listens."""
        instance = self.instances[name]
        child = _Child(os.path.join(self.folder, f"{name}.log"))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONHOME"}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        instance.process = reactor.spawnProcess(
            child, sys.executable,
            [sys.executable, "-m", "roost.homeserver.cli", "run", "-c",
             self.own_config.get(name, self.config_path),
             "--worker", name], env=env, path=self.folder)
        instance.child = child
        for port in instance.ports():
            await _wait_for_port(port, child, lambda: self.log(name))

    async def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        instance = self.instances[name]
        if instance.child is None or instance.child.ended.called:
            return
        instance.process.signalProcess(sig)
        timer = reactor.callLater(30, lambda: instance.child.ended.called  # type: ignore
                                  or instance.process.signalProcess(signal.SIGKILL))
        await instance.child.ended
        if timer.active():
            timer.cancel()

    async def kill(self, name: str) -> None:
        """kill -9: no drain, no flush."""
        await self.stop(name, signal.SIGKILL)

    async def stop_all(self) -> None:
        await defer.gatherResults([defer.ensureDeferred(self.stop(n)) for n in self.instances])


async def _wait_for_port(port: int, child: _Child, log: Any) -> None:
    for _ in range(1500):  # 60 s: a loaded machine starts Python slowly
        if child.ended.called:
            raise AssertionError(f"instance exited during start:\n{log()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        await task.deferLater(reactor, 0.04, lambda: None)
    raise AssertionError(f"instance did not listen on {port}:\n{log()[-3000:]}")


async def start_cluster(testcase: TestCase, layout: dict[str, list[str]],
                        federation_port: int | None = None, **overrides: Any) -> Cluster:
    """Write one configuration with an instance per `layout` entry (name -> roles) on a
    fresh database and a fresh Redis key prefix, start every instance, stop them at the
    end. `federation_port` is the port other servers reach this server on (the server
    name is localhost:<it>), e.g. nginx's; by default the inbound instance's own."""
    folder = os.path.abspath(testcase.mktemp())
    os.makedirs(folder)
    dsn = await fresh_database(testcase)
    cert, key = write_self_signed(folder, "tls", "localhost")
    instances: dict[str, Instance] = {}
    raw_instances: dict[str, Any] = {}
    for name, roles in layout.items():
        instance = Instance(name, roles)
        listeners: dict[str, Any] = {}
        if {"client", "media"} & set(roles):
            instance.client_port = free_port()
            listeners["client"] = {"port": instance.client_port}
        if {"federation_inbound", "media"} & set(roles):
            instance.federation_port = free_port()
            listeners["federation"] = {"enabled": True, "port": instance.federation_port}
        entry: dict[str, Any] = {"roles": roles, "listeners": listeners}
        if "event_writer" in roles:
            instance.internal_port = free_port()
            entry["internal"] = {"port": instance.internal_port}
        instances[name] = instance
        raw_instances[name] = entry
    if federation_port is None:
        inbound = [i for i in instances.values() if "federation_inbound" in i.roles]
        federation_port = inbound[0].federation_port if inbound else free_port()
    server_name = f"localhost:{federation_port}"
    raw: dict[str, Any] = {
        "server_name": server_name,
        "public_baseurl": "http://localhost/",
        "data_dir": os.path.join(folder, "data"),
        "database": {"dsn": dsn, "pool_min": 1, "pool_max": 4},
        "redis": {"enabled": True, "key_prefix": f"roost-test-{uuid.uuid4().hex[:12]}:"},
        "listeners": {
            "client": {"bind_address": "127.0.0.1", "x_forwarded": True},
            "federation": {"bind_address": "127.0.0.1", "tls_certificate_path": cert,
                           "tls_private_key_path": key},
        },
        "registration": {"enabled": True},
        "passwords": {"bcrypt_rounds": 4},
        "rate_limits": {"login": _UNLIMITED, "registration": _UNLIMITED,
                        "message": _UNLIMITED, "media": _UNLIMITED},
        "logging": {"level": "INFO"},
        "federation": {"verify_certificates": False, "ip_range_blocklist": [],
                       "min_retry_interval": 2000, "max_retry_interval": 10000},
        "workers": {
            "shared_secret": uuid.uuid4().hex,
            "instances": raw_instances,
            "event_writers": [n for n, r in layout.items() if "event_writer" in r],
            "federation_senders": [n for n, r in layout.items() if "federation_sender" in r],
        },
    }
    for key_, value in overrides.items():
        raw[key_] = {**raw[key_], **value} if isinstance(raw.get(key_), dict) else value
    config_path = os.path.join(folder, "homeserver.yaml")
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(raw, f, indent=1)  # JSON is YAML
    cluster = Cluster(folder, config_path, server_name, instances, cert, key, raw)
    testcase.addCleanup(lambda: defer.ensureDeferred(cluster.stop_all()))
    await defer.gatherResults([defer.ensureDeferred(cluster.start(n)) for n in instances])
    return cluster


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port, to stop and start (the
    machine's shared Redis is never restarted)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.port = free_port()
        self.child: _Child | None = None
        self.process: Any = None

    async def start(self) -> None:
        import shutil

        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.child = _Child(os.path.join(self.folder, "redis.log"))
        self.process = reactor.spawnProcess(
            self.child, server, [server, "--port", str(self.port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no"], env={}, path=self.folder)
        await _wait_for_port(self.port, self.child, lambda: "redis-server did not start")

    async def stop(self) -> None:
        if self.child is not None and not self.child.ended.called:
            self.process.signalProcess(signal.SIGKILL)
            await self.child.ended


async def private_redis(testcase: TestCase, started: bool = True) -> PrivateRedis:
    """A private redis-server, running unless not `started` (a port where none listens
    yet: `start()` it later)."""
    folder = os.path.abspath(testcase.mktemp())
    os.makedirs(folder)
    redis = PrivateRedis(folder)
    if started:
        await redis.start()
    testcase.addCleanup(lambda: defer.ensureDeferred(redis.stop()))
    return redis
