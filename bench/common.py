"""Shared pieces of the benchmarks: start a Roost process, count CPU, summarise latencies.

Benchmarks run on demand (`make bench`), never as timed unit tests. Each starts
its own Roost on a fresh PostgreSQL database on the local server (the same one
a Synapse comparison would use), drives it from asyncio clients in this
process, and reads CPU time of the Roost process and of PostgreSQL from /proc.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import psutil
import psycopg2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN_DSN = os.environ.get("ROOST_BENCH_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RoostProcess:
    proc: subprocess.Popen[bytes]
    base_url: str
    database: str
    server_name: str = "bench.local"
    metrics_url: str | None = None  # GET it for the Prometheus text (federation benches)
    label: ClassVar[str] = "roost"  # names the server in CpuMeter's figures

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample of the server's /metrics (0 if absent): summed over label sets
        unless `labels` picks one."""
        assert self.metrics_url is not None, "started without the metrics listener"
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            text = resp.read().decode("utf-8")
        total, known = 0.0, False
        for family in text_string_to_metric_families(text):
            known = known or name in (family.name, family.name + "_total")
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in (labels or {}).items()):
                    total += sample.value
        if not known:  # a misspelt name must not read as zero
            raise KeyError(f"{self.metrics_url} has no metric {name}")
        return total

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def reactor_cpu_seconds(self) -> float:
        """CPU time of Roost's main thread (the reactor's), without the database threads."""
        for thread in psutil.Process(self.proc.pid).threads():
            if thread.id == self.proc.pid:
                return thread.user_time + thread.system_time
        return 0.0

    def profile_on(self) -> None:
        """Start profiling a measured phase (only under ROOST_BENCH_PROFILE_MEASURED)."""
        if os.environ.get("ROOST_BENCH_PROFILE_MEASURED"):
            self.proc.send_signal(signal.SIGUSR1)

    def profile_off(self) -> None:
        if os.environ.get("ROOST_BENCH_PROFILE_MEASURED"):
            self.proc.send_signal(signal.SIGUSR2)
            time.sleep(0.5)  # the stats are written by the server

    def rss_mib(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / 2**20


def postgres_cpu_seconds() -> float:
    """CPU time of every PostgreSQL process on the machine (backends included)."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cpu_times"]):
        if proc.info["name"] and proc.info["name"].startswith("postgres") and proc.info["cpu_times"]:
            total += proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return total


def postgres_cpu_by_process() -> dict[int, float]:
    """pid -> CPU seconds of each PostgreSQL process, to diff over a phase (see cpu_between)."""
    found: dict[int, float] = {}
    for proc in psutil.process_iter(["name", "cpu_times"]):
        if proc.info["name"] and proc.info["name"].startswith("postgres") and proc.info["cpu_times"]:
            found[proc.pid] = proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return found


def postgres_cpu_of(database: str) -> dict[int, float]:
    """pid -> CPU seconds of the PostgreSQL backends connected to `database` (their process
    title names it): the bench's own share, without other databases' load on a shared
    server (the WAL writer and checkpointer, shared by all, are left out)."""
    found: dict[int, float] = {}
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        title = " ".join(proc.info["cmdline"] or ())
        if (proc.info["name"] or "").startswith("postgres") and f" {database} " in title:
            times = proc.info["cpu_times"]
            found[proc.pid] = times.user + times.system
    return found


def cpu_between(start: dict[int, float], end: dict[int, float]) -> float:
    """CPU spent between two readings by the processes alive at the end.

    A backend that exits meanwhile (other test runs share the server) would
    otherwise make the machine-wide sum go down; its last slice is lost instead.
    """
    return sum(cpu - start.get(pid, 0.0) for pid, cpu in end.items())


def _admin(sql: str) -> None:
    conn = psycopg2.connect(ADMIN_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def run_on_scratch_database(measure: Callable[[Any, str], Awaitable[dict[str, Any]]]
                            ) -> dict[str, Any]:
    """Run `measure(reactor, dsn)` in this process on a database made for it and
    dropped after: for benchmarks of one storage path without a server."""
    from twisted.internet import defer, task

    database = f"roost_bench_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{database}"')
    dsn = ADMIN_DSN.replace("dbname=postgres", f"dbname={database}")
    result: dict[str, Any] = {}

    async def run(reactor: Any) -> None:
        result.update(await measure(reactor, dsn))
        await task.deferLater(reactor, 0.1, lambda: None)

    try:
        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    except SystemExit:
        pass
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return result


@contextlib.contextmanager
def roost_server(extra_yaml: str = "", federation: bool = False,
                 metrics: bool = False) -> Iterator[RoostProcess]:
    """A Roost process; with `federation`, named 127.0.0.1:<port> and federating over
    TLS on loopback (self-signed certificate, checks off, blocklist empty: bench only)."""
    database = f"roost_bench_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{database}"')
    folder = tempfile.mkdtemp(prefix="roost-bench-")
    port = free_port()
    dsn = ADMIN_DSN.replace("dbname=postgres", f"dbname={database}")
    server_name, fed_listener, metrics_url = "bench.local", "", None
    if federation:
        from roost.homeserver.tlsgen import write_self_signed

        fed_port = free_port()
        server_name = f"127.0.0.1:{fed_port}"
        cert, key = write_self_signed(folder, "tls", "localhost")
        metrics_port = free_port()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        fed_listener = (f", federation: {{enabled: true, bind_address: 127.0.0.1, port: {fed_port},"
                        f" tls_certificate_path: {cert}, tls_private_key_path: {key}}}"
                        f", metrics: {{enabled: true, bind_address: 127.0.0.1,"
                        f" port: {metrics_port}}}")
        extra_yaml += ("\nfederation: {verify_certificates: false, ip_range_blocklist: [],"
                       " min_retry_interval: 500ms, max_retry_interval: 5s}\n")
    elif metrics:  # the metrics listener alone (e.g. database time per transaction)
        metrics_port = free_port()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        fed_listener = (f", metrics: {{enabled: true, bind_address: 127.0.0.1,"
                        f" port: {metrics_port}}}")
    config = f"""
server_name: "{server_name}"
data_dir: {folder}/data
listeners: {{client: {{bind_address: 127.0.0.1, port: {port}}}{fed_listener}}}
database: {{dsn: "{dsn}", pool_min: 4, pool_max: 16}}
registration: {{enabled: true}}
passwords: {{bcrypt_rounds: 4}}
rate_limits:
  login: {{per_second: 100000, burst: 100000}}
  registration: {{per_second: 100000, burst: 100000}}
  message: {{per_second: 100000, burst: 100000}}
logging: {{level: WARNING}}
{extra_yaml}
"""
    path = os.path.join(folder, "homeserver.yaml")
    with open(path, "w") as f:
        f.write(config)
    profile = os.environ.get("ROOST_BENCH_PROFILE")  # a path: run Roost under cProfile
    measured = os.environ.get("ROOST_BENCH_PROFILE_MEASURED")  # the same, measured phases only
    prefix = [sys.executable] + (["-m", "cProfile", "-o", profile] if profile else [])
    if measured:
        # ROOST_BENCH_PROFILER: another wrapper with profiled.py's interface (one profiling the
        # pool threads, say)
        profiler = os.environ.get("ROOST_BENCH_PROFILER", os.path.join(REPO, "bench", "profiled.py"))
        prefix = [sys.executable, profiler, measured]
    proc = subprocess.Popen(prefix + ["-m", "roost.homeserver.cli", "run", "-c", path], cwd=folder)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base_url, proc)
        yield RoostProcess(proc, base_url, database, server_name, metrics_url)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _wait_up(base_url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("roost exited during start")
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("roost did not start")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(latencies_s: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(latencies_s, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies_s, 99) * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies_s) * 1000, 1) if latencies_s else 0.0,
    }


def print_result(name: str, result: dict[str, object]) -> None:
    print(json.dumps({"benchmark": name, **result}, indent=2))
