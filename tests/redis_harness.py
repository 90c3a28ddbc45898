"""Redis for tests: the server on 127.0.0.1:6379 when one answers, else a private one.

Tests must pass on a machine without Redis running, so the fallback starts a
`redis-server` of its own on a free loopback port, with no persistence, in a
temporary directory, and stops it when the test ends. Tests that share a
server stay apart by key prefix: `isolated_redis` gives each test a fresh
uuid prefix and deletes every key under it afterwards. Nothing here flushes a
database, because other people's tests may be using the same server.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from twisted.internet import defer, reactor, task

from roost.storage.redis import RedisConnection, connect_redis

SHARED_REDIS = ("127.0.0.1", 6379)
STARTUP_TIMEOUT = 10.0


class HasCleanups(Protocol):
    """The part of a trial TestCase the harness uses; tests may pass a stand-in."""

    def addCleanup(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None: ...


def answers_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis that needs no password listens there (blocking, but on loopback)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(64)
                if not chunk:
                    break
                reply += chunk
            return reply == b"+PONG\r\n"
    except OSError:
        return False


async def redis_for_tests(testcase: HasCleanups) -> tuple[str, int]:
    """The shared server if it answers, else a private one stopped at cleanup."""
    if answers_ping(*SHARED_REDIS):
        return SHARED_REDIS
    return await start_private_redis(testcase)


async def start_private_redis(testcase: HasCleanups) -> tuple[str, int]:
    """Start a redis-server of this test's own; a few tries in case a port is taken meanwhile."""
    workdir = Path(tempfile.mkdtemp(prefix="roost-redis-"))
    testcase.addCleanup(shutil.rmtree, workdir, True)
    for attempt in range(3):
        port = _free_port()
        log = workdir / f"redis-{attempt}.log"
        proc = _spawn(workdir, port, log)
        testcase.addCleanup(_stop, proc)
        if await _wait_until_up(proc, port):
            return ("127.0.0.1", port)
    raise RuntimeError(f"redis-server did not start:\n{log.read_text()}")


def _free_port() -> int:
    """A loopback port that was free a moment ago (redis-server may still lose the race)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(workdir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """redis-server in the foreground, no persistence, logging to a file for failures."""
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(workdir)]
    with log.open("wb") as out:
        return subprocess.Popen(args, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


async def _wait_until_up(proc: subprocess.Popen[bytes], port: int) -> bool:
    """True once it answers PING; False if it exited (the port was taken)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if answers_ping("127.0.0.1", port):
            return True
        await task.deferLater(reactor, 0.02, lambda: None)
    raise RuntimeError(f"redis-server on port {port} did not answer in {STARTUP_TIMEOUT}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, and kill if it will not go, so no server outlives its test."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def redis_connection(testcase: HasCleanups, host: str, port: int) -> RedisConnection:
    """A connected pool that is closed when the test ends."""
    conn = await connect_redis(None, host, port, 0, None)
    testcase.addCleanup(lambda: defer.ensureDeferred(conn.close()))
    return conn


async def delete_keys(conn: RedisConnection, prefix: str) -> None:
    """Delete every key starting with prefix (a uuid prefix, so no glob characters)."""
    cursor = "0"
    while True:
        cursor, keys = await conn.execute("SCAN", cursor, "MATCH", prefix + "*", "COUNT", 1000)
        if keys:
            await conn.execute("DEL", *keys)
        if cursor == "0":
            return


@dataclass(frozen=True)
class IsolatedRedis:
    """A server, a connection to it, and a key prefix that belongs to one test."""

    host: str
    port: int
    conn: RedisConnection
    prefix: str


async def isolated_redis(testcase: HasCleanups) -> IsolatedRedis:
    """A connection and a key prefix no other test uses; its keys are deleted at cleanup."""
    host, port = await redis_for_tests(testcase)
    conn = await redis_connection(testcase, host, port)
    prefix = f"roost-test:{uuid.uuid4().hex}:"
    # cleanups run last-in first-out: the keys go before the connection closes
    testcase.addCleanup(lambda: defer.ensureDeferred(delete_keys(conn, prefix)))
    return IsolatedRedis(host, port, conn, prefix)
