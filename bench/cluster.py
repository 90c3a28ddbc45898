"""Several Roost processes behind nginx (issue 17): sends across many rooms, and /sync
fan-out, for a layout of writers and readers, against one process.

    .venv/bin/python bench/cluster.py --layout single|1w2r|2w2r [--workload sends|fanout]
        [--rooms 40] [--messages 25] [--receivers 200] [--rate 10] [--seconds 10]
        [--transactions] [--compare single --pairs 4]

Every layout runs behind contrib/nginx/roost-workers.conf (plain HTTP here: only the
listen lines and the upstream ports are changed, the TLS lines dropped), on a fresh
database and a fresh Redis key prefix. `single` is one process with every role behind
the same file (both upstream entries point at it).

- sends: `rooms` users each send `messages` messages into a room of their own, all at
  once; sends per second (wall clock) and CPU per message of all Roost processes, of
  nginx and of PostgreSQL (every process of the server, and only the backends serving
  the bench's database: the figure that other databases' load on a shared server does
  not reach).
- fanout: bench/sync_fanout.py's fan-out (one sender at `rate`/s into a room with
  `receivers` users long-polling /sync through nginx, spread over the readers by token).

On a shared machine wall-clock rates are noise; compare CPU per operation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import (  # noqa: E402
    ADMIN_DSN,
    REPO,
    _admin,
    cpu_between,
    free_port,
    postgres_cpu_by_process,
    postgres_cpu_of,
    print_result,
    summary,
)
from bench.fanout_procs import fanout_spread  # noqa: E402
from bench.sync_fanout import fanout  # noqa: E402

V3 = "/_matrix/client/v3"
FOLLOWERS = ["pusher", "appservice", "background", "federation_sender"]
# The writers also run `client`: nginx sends their rooms' writes straight to them.
LAYOUTS: dict[str, dict[str, list[str]]] = {
    "single": {},
    "1w2r": {"writer1": ["event_writer", "client", "media", *FOLLOWERS],
             "reader1": ["client"], "reader2": ["client"]},
    "2w2r": {"writer1": ["event_writer", "client", "media", *FOLLOWERS],
             "writer2": ["event_writer", "client"],
             "reader1": ["client"], "reader2": ["client"]},
    "1w1r": {"writer1": ["event_writer", "client", "media", *FOLLOWERS], "reader1": ["client"]},
}


class Cluster:
    def __init__(self, layout: str, metrics: bool = False) -> None:
        self.folder = tempfile.mkdtemp(prefix="roost-cluster-")
        self.database = f"roost_bench_{uuid.uuid4().hex[:8]}"
        self.layout = LAYOUTS[layout]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.profiled: list[subprocess.Popen[bytes]] = []
        self.client_ports: dict[str, int] = {}
        # --transactions: each instance's metrics listener, for its database transactions.
        self.metrics_ports: dict[str, int] = {}
        self.metrics = metrics
        self.nginx: subprocess.Popen[bytes] | None = None
        self.port = free_port()

    def config(self) -> str:
        dsn = ADMIN_DSN.replace("dbname=postgres", f"dbname={self.database}")
        raw: dict[str, Any] = {
            "server_name": "bench.local", "data_dir": f"{self.folder}/data",
            "listeners": {"client": {"bind_address": "127.0.0.1", "x_forwarded": True}},
            "database": {"dsn": dsn, "pool_min": 4, "pool_max": 16},
            "registration": {"enabled": True}, "passwords": {"bcrypt_rounds": 4},
            "rate_limits": {k: {"per_second": 100000, "burst": 100000}
                            for k in ("login", "registration", "message", "media")},
            "logging": {"level": "WARNING"},
            "redis": {"enabled": True, "key_prefix": f"roost-bench-{uuid.uuid4().hex[:8]}:"},
        }
        if not self.layout:
            self.client_ports["main"] = free_port()
            raw["listeners"]["client"]["port"] = self.client_ports["main"]
            if self.metrics:
                self.metrics_ports["main"] = free_port()
                raw["listeners"]["metrics"] = {"enabled": True,
                                               "port": self.metrics_ports["main"]}
            return json.dumps(raw)
        instances: dict[str, Any] = {}
        for name, roles in self.layout.items():
            entry: dict[str, Any] = {"roles": roles, "listeners": {}}
            if {"client", "media"} & set(roles):
                self.client_ports[name] = free_port()
                entry["listeners"]["client"] = {"port": self.client_ports[name]}
            if self.metrics:
                self.metrics_ports[name] = free_port()
                entry["listeners"]["metrics"] = {"enabled": True,
                                                 "port": self.metrics_ports[name]}
            if not entry["listeners"]:
                del entry["listeners"]
            if "event_writer" in roles:
                entry["internal"] = {"port": free_port()}
            instances[name] = entry
        raw["workers"] = {
            "shared_secret": uuid.uuid4().hex, "instances": instances,
            "event_writers": [n for n, r in self.layout.items() if "event_writer" in r],
            "federation_senders": [n for n, r in self.layout.items()
                                   if "federation_sender" in r]}
        return json.dumps(raw)

    def __enter__(self) -> Cluster:
        _admin(f'CREATE DATABASE "{self.database}"')
        path = os.path.join(self.folder, "homeserver.yaml")
        with open(path, "w") as f:
            f.write(self.config())
        subprocess.run([sys.executable, "-m", "roost.homeserver.cli", "migrate", "-c", path],
                       check=True, cwd=self.folder, capture_output=True)
        for name in self.layout or {"main": []}:
            worker = [] if name == "main" else ["--worker", name]
            # ROOST_BENCH_PROFILE=NAME:PATH runs instance NAME under cProfile into PATH.
            profiled, _, out = os.environ.get("ROOST_BENCH_PROFILE", "").partition(":")
            profile = ["-m", "cProfile", "-o", out] if profiled == name else []
            # ROOST_BENCH_PROFILE_MEASURED=NAME:PATH[,NAME:PATH]: the reactor thread of
            # those instances, during the fan-out's measured phase only (bench/profiled.py).
            measured = dict(part.partition(":")[::2] for part in os.environ.get(
                "ROOST_BENCH_PROFILE_MEASURED", "").split(",") if part)
            if name in measured:
                profile = [os.path.join(REPO, "bench", "profiled.py"), measured[name]]
            self.procs[name] = subprocess.Popen(
                [sys.executable, *profile, "-m", "roost.homeserver.cli", "run", "-c", path,
                 *worker], cwd=self.folder)
            if name in measured:
                self.profiled.append(self.procs[name])
        try:
            for name, port in self.client_ports.items():
                _wait(f"http://127.0.0.1:{port}/health", self.procs[name])
            time.sleep(1.0)  # the writers' internal listeners and the bus
            self._start_nginx()
        except BaseException:
            self.__exit__()  # no process left behind
            raise
        return self

    def _start_nginx(self) -> None:
        with open(os.path.join(REPO, "contrib", "nginx", "roost-workers.conf")) as f:
            text = f.read()
        readers = [p for n, p in self.client_ports.items()
                   if n == "main" or not {"event_writer"} & set(self.layout.get(n, []))]
        writers = [self.client_ports[n] for n, r in self.layout.items()
                   if "event_writer" in r] or readers  # in event_writers order
        media = self.client_ports.get("writer1", readers[0])
        ports = (readers * 2)[:2]  # one reader: listed twice (nginx allows it)
        lines = []
        for line in text.splitlines():
            if line.strip().startswith("ssl_"):
                continue
            line = line.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{self.port};")
            # The federation block, unused here: on a free loopback port (left without a
            # listen line, nginx would take port 80, perhaps taken).
            line = line.replace("listen 8448 ssl http2;", f"listen 127.0.0.1:{free_port()};")
            line = line.replace("server 127.0.0.1:8101;", f"server 127.0.0.1:{ports[0]};")
            line = line.replace("server 127.0.0.1:8102;", f"server 127.0.0.1:{ports[1]};")
            line = line.replace("server 127.0.0.1:8103;", f"server 127.0.0.1:{media};")
            line = line.replace("server 127.0.0.1:8104;", " ".join(
                f"server 127.0.0.1:{p};" for p in writers))
            lines.append(line)
        site = "\n".join(lines)
        folder = os.path.join(self.folder, "nginx")
        os.makedirs(folder)
        with open(os.path.join(folder, "site.conf"), "w") as f:
            f.write(site)
        temp = " ".join(f"{n}_temp_path {folder}/{n};" for n in
                        ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = os.path.join(folder, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"worker_processes 1; user root; pid {folder}/nginx.pid;"
                    f" error_log {folder}/error.log;\n events {{ worker_connections 4096; }}\n"
                    f" http {{ access_log off; {temp} include {folder}/site.conf; }}\n")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.nginx = subprocess.Popen([nginx, "-p", folder, "-c", conf, "-g", "daemon off;"])
        _wait(f"http://127.0.0.1:{self.port}/health", self.nginx)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def cpu(self) -> tuple[float, float]:
        """(CPU seconds of the Roost processes, of nginx with its worker)."""
        roost = sum(_cpu(pid) for pid in self.pids())
        nginx = 0.0
        if self.nginx is not None:
            parent = psutil.Process(self.nginx.pid)
            nginx = sum(_cpu(p.pid) for p in [parent, *parent.children()])
        return roost, nginx

    def cpu_each(self) -> dict[str, float]:
        return {name: _cpu(proc.pid) for name, proc in self.procs.items()}

    def transactions(self) -> dict[str, dict[str, float]]:
        """Database transactions so far, by instance and transaction name (their metrics)."""
        out: dict[str, dict[str, float]] = {}
        prefix = "roost_db_transaction_duration_seconds_count{desc=\""
        for name, port in self.metrics_ports.items():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                text = r.read().decode()
            out[name] = {}
            for line in text.splitlines():
                if line.startswith(prefix):
                    desc, _, value = line[len(prefix):].partition("\"} ")
                    out[name][desc] = float(value)
        return out

    def rss_mib(self) -> float:
        return sum(psutil.Process(pid).memory_info().rss for pid in self.pids()) / 2**20

    def __exit__(self, *exc: object) -> None:
        if self.nginx is not None:
            self.nginx.send_signal(signal.SIGQUIT)
            self.nginx.wait(timeout=30)
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        _admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


def _cpu(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return t.user + t.system


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited during start")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


async def sends(cluster: Cluster, rooms: int, messages: int) -> dict[str, Any]:
    base = cluster.base
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def user(i: int) -> tuple[dict[str, str], str]:
            body = {"username": f"s{i}", "password": "pw", "auth": {"type": "m.login.dummy"}}
            async with session.post(base + V3 + "/register", json=body) as r:
                headers = {"Authorization": f"Bearer {(await r.json())['access_token']}"}
            async with session.post(base + V3 + "/createRoom", json={}, headers=headers) as r:
                return headers, (await r.json())["room_id"]

        users = await asyncio.gather(*(user(i) for i in range(rooms)))
        await asyncio.sleep(1.0)
        latencies: list[float] = []

        async def sender(i: int, headers: dict[str, str], room: str) -> None:
            for n in range(messages):
                started = time.monotonic()
                async with session.put(f"{base}{V3}/rooms/{room}/send/m.room.message/{n}",
                                       json={"msgtype": "m.text", "body": f"m {n}"},
                                       headers=headers) as r:
                    await r.read()
                    assert r.status == 200, r.status
                latencies.append(time.monotonic() - started)

        txns0 = cluster.transactions()
        roost0, nginx0 = cluster.cpu()
        each0 = cluster.cpu_each()
        pg0 = postgres_cpu_by_process()
        own0 = postgres_cpu_of(cluster.database)
        started = time.monotonic()
        await asyncio.gather(*(sender(i, h, room) for i, (h, room) in enumerate(users)))
        wall = time.monotonic() - started
        await asyncio.sleep(2.0)  # work left behind (push evaluation, indexing) counts too
        roost1, nginx1 = cluster.cpu()
        each1 = cluster.cpu_each()
        pg = cpu_between(pg0, postgres_cpu_by_process())
        own = cpu_between(own0, postgres_cpu_of(cluster.database))
        txns1 = cluster.transactions()
    count = rooms * messages
    per_message = {
        f"{name}:{desc}": round((n - txns0[name].get(desc, 0.0)) / count, 2)
        for name, found in txns1.items() for desc, n in found.items()
        if n - txns0[name].get(desc, 0.0) >= count / 100}
    extra = {"db_transactions_per_message": dict(
        sorted(per_message.items(), key=lambda kv: -kv[1]))} if per_message else {}
    return {"messages": count, "sends_per_s": round(count / wall, 1), **summary(latencies),
            "roost_cpu_ms_per_message": round((roost1 - roost0) * 1000 / count, 2),
            "nginx_cpu_ms_per_message": round((nginx1 - nginx0) * 1000 / count, 2),
            "postgres_cpu_ms_per_message": round(pg * 1000 / count, 2),
            "postgres_backends_cpu_ms_per_message": round(own * 1000 / count, 2),
            "cpu_ms_per_message_by_process": {
                n: round((each1[n] - each0[n]) * 1000 / count, 2) for n in each0}, **extra}


async def fanout_through(cluster: Cluster, receivers: int, rate: float,
                         seconds: float, clients: int = 0, lean: bool = False) -> dict[str, Any]:
    """`clients`: 0, the receivers in this process (bench/sync_fanout.py); else spread
    over that many client processes (bench/fanout_procs.py), whose CPU is reported."""
    roost0, nginx0 = cluster.cpu()
    meter = _PhaseMeter(cluster)
    if clients:
        result = await fanout_spread(cluster.base, receivers, rate, seconds, clients, meter,
                                     lean)
    else:
        result = await fanout(cluster.base, receivers, rate, seconds, meter)  # type: ignore[arg-type]
    roost1, nginx1 = cluster.cpu()
    count = max(1, result["messages"])
    deliveries = max(1, result["deliveries"])
    renamed = {"roost_cpu_ms_per_message": "roost_cpu_ms_per_message_measured_phase",
               "roost_reactor_cpu_ms_per_message": "nginx_cpu_ms_per_message",
               "bench_client_cpu_ms_per_message": "bench_sender_cpu_ms_per_message"
               if clients else "bench_client_cpu_ms_per_message"}
    result = {renamed.get(k, k): v for k, v in result.items()}
    phase = result["roost_cpu_ms_per_message_measured_phase"]
    # The whole run's CPU (registrations, joins and initial syncs included): the figure
    # this bench printed before 2026-12-03 23:00 as roost_cpu_ms_per_message_all_processes.
    return {**result, **meter.by_process(count), "roost_cpu_ms_per_delivery_measured_phase":
            round(phase * count / deliveries, 3),
            "roost_cpu_ms_per_message_whole_run": round((roost1 - roost0) * 1000 / count, 1),
            "nginx_cpu_ms_per_message_whole_run": round((nginx1 - nginx0) * 1000 / count, 1)}


class _PhaseMeter:
    """What bench/sync_fanout.CpuMeter reads of a server, for a whole cluster: the Roost
    processes' CPU, nginx's in place of the reactor thread's, and the profiles of
    ROOST_BENCH_PROFILE_MEASURED switched on and off with the measured phase; also each
    instance's CPU and the bench database's PostgreSQL backends' over the phase (the
    whole server's figure counts other databases' load on a shared machine)."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._start: tuple[dict[str, float], dict[int, float]] = ({}, {})
        self.spent: tuple[dict[str, float], float] = ({}, 0.0)

    def by_process(self, count: int) -> dict[str, Any]:
        """Each instance's CPU ms per message, and the bench database's backends'."""
        each, own = self.spent
        return {"cpu_ms_per_message_by_process": {n: round(s * 1000 / count, 1)
                                                  for n, s in each.items()},
                "postgres_backends_cpu_ms_per_message": round(own * 1000 / count, 1)}

    def cpu_seconds(self) -> float:
        return self._cluster.cpu()[0]

    def reactor_cpu_seconds(self) -> float:
        return self._cluster.cpu()[1]

    def profile_on(self) -> None:
        """The measured phase starts."""
        self._start = (self._cluster.cpu_each(), postgres_cpu_of(self._cluster.database))
        for proc in self._cluster.profiled:
            proc.send_signal(signal.SIGUSR1)

    def profile_off(self) -> None:
        """The measured phase ends."""
        for proc in self._cluster.profiled:
            proc.send_signal(signal.SIGUSR2)
        each = self._cluster.cpu_each()
        self.spent = ({n: each[n] - self._start[0].get(n, 0.0) for n in each},
                      cpu_between(self._start[1], postgres_cpu_of(self._cluster.database)))


def run_one(layout: str, args: argparse.Namespace) -> dict[str, Any]:
    with Cluster(layout, args.transactions) as cluster:
        if args.workload == "sends":
            result = asyncio.run(sends(cluster, args.rooms, args.messages))
        else:
            result = asyncio.run(fanout_through(cluster, args.receivers, args.rate,
                                                args.seconds, args.clients,
                                                args.lean_client))
        result["roost_rss_mib_all_processes"] = round(cluster.rss_mib(), 1)
    print_result(f"cluster_{args.workload}_{layout}", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="1w2r")
    parser.add_argument("--compare", choices=sorted(LAYOUTS), default=None,
                        help="sends: run this layout right after each --layout run and"
                             " print the rate ratio layout / compare of each pair")
    parser.add_argument("--pairs", type=int, default=1, help="how many back-to-back pairs")
    parser.add_argument("--workload", choices=("sends", "fanout"), default="sends")
    parser.add_argument("--rooms", type=int, default=40)
    parser.add_argument("--messages", type=int, default=25)
    parser.add_argument("--receivers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=0,
                        help="fanout: spread the receivers over this many client processes"
                             " (0: all in this process, as bench/sync_fanout.py does)")
    parser.add_argument("--lean-client", action="store_true",
                        help="fanout with --clients: the receivers' long polls through"
                             " bench/lean_client.py instead of aiohttp (the load"
                             " generator's CPU on the measured machine)")
    parser.add_argument("--transactions", action="store_true",
                        help="also count database transactions per message, by process")
    args = parser.parse_args()
    if args.compare is None or args.workload != "sends":
        run_one(args.layout, args)
        return
    # On a shared machine only runs made back to back compare: the load moves between pairs.
    ratios = []
    for _ in range(args.pairs):
        against = run_one(args.compare, args)["sends_per_s"]
        ratios.append(round(run_one(args.layout, args)["sends_per_s"] / against, 2))
    print_result(f"cluster_sends_{args.layout}_over_{args.compare}", {
        "rate_ratios": ratios, "median": round(statistics.median(ratios), 2)})


if __name__ == "__main__":
    main()
