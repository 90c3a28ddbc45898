"""End-to-end encryption workloads of the e2ee issue, Roost to Roost on loopback.

    .venv/bin/python bench/e2e_keys.py [--devices 50] [--rounds 5]

Two Roost processes federate over TLS on 127.0.0.1. Each holds `devices`
devices (10 users, each logged in `devices`/10 times), every device with
signed device keys and one-time keys. A user on the first server claims one
key of every device of both servers (2 x `devices`) in ONE /keys/claim, `rounds`
times. Each server's /metrics counts its `e2e_claim` transactions, which a
served claim runs once per request: the bench prints how many each claim cost
the second server (1 = one round trip to it) and the claim's latency.

Then device list changes: a user of each server shares a room with the first
server's `watcher`, who long-polls /sync; a new device of each uploads its
keys and the bench measures the time from the upload's start to the sync that
lists the user in `device_lists.changed` (local: same server; remote: through
an m.device_list_update EDU).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import signedjson.sign
from nacl.signing import SigningKey
from unpaddedbase64 import encode_base64

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import RoostProcess, print_result, roost_server, summary  # noqa: E402
from bench.sync_fanout import Client  # noqa: E402

V3 = "/_matrix/client/v3"


def claim_transactions(server: RoostProcess) -> float:
    """How many e2e_claim transactions the server has committed (its /metrics)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    assert server.metrics_url is not None
    with urllib.request.urlopen(server.metrics_url, timeout=10) as resp:
        text = resp.read().decode("utf-8")
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "roost_db_transaction_duration_seconds_count"
               and sample.labels.get("desc") == "e2e_claim")


def signed_keys(user_id: str, device_id: str, count: int) -> dict[str, Any]:
    key = SigningKey.generate()
    key.alg, key.version = "ed25519", device_id
    public = encode_base64(key.verify_key.encode())
    device = {"user_id": user_id, "device_id": device_id,
              "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
              "keys": {f"ed25519:{device_id}": public, f"curve25519:{device_id}": public}}
    otks = {f"signed_curve25519:{device_id}{i}": signedjson.sign.sign_json(
        {"key": f"{device_id}{i}"}, user_id, key) for i in range(count)}
    return {"device_keys": signedjson.sign.sign_json(device, user_id, key),
            "one_time_keys": otks}


async def account(session: aiohttp.ClientSession, base: str, name: str) -> tuple[Client, dict]:
    body = {"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}}
    async with session.post(base + V3 + "/register", json=body) as resp:
        reg = await resp.json()
    return Client(session, base, reg["access_token"]), reg


async def login(session: aiohttp.ClientSession, base: str, name: str) -> tuple[Client, dict]:
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name},
            "password": "pw"}
    async with session.post(base + V3 + "/login", json=body) as resp:
        reg = await resp.json()
    return Client(session, base, reg["access_token"]), reg


async def populate(session: aiohttp.ClientSession, server: RoostProcess, devices: int,
                   otks: int) -> dict[str, list[str]]:
    """10 users with devices/10 devices each, all with keys: {user: [device ids]}."""
    out: dict[str, list[str]] = {}
    per_user = max(1, devices // 10)
    for u in range(10):
        client, reg = await account(session, server.base_url, f"u{u}")
        sessions = [(client, reg)] + [await login(session, server.base_url, f"u{u}")
                                      for _ in range(per_user - 1)]
        await asyncio.gather(*(c.call("POST", "/keys/upload",
                                      signed_keys(r["user_id"], r["device_id"], otks))
                               for c, r in sessions))
        out[reg["user_id"]] = [r["device_id"] for _, r in sessions]
    return out


async def claims(a: RoostProcess, b: RoostProcess, devices: int, rounds: int) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        wanted: dict[str, dict[str, str]] = {}
        for server in (a, b):
            for user, ids in (await populate(session, server, devices, rounds + 1)).items():
                wanted[user] = {d: "signed_curve25519" for d in ids}
        claimer, _ = await account(session, a.base_url, "claimer")
        latencies, costs_b, costs_a, claimed = [], [], [], []
        for _ in range(rounds):
            before_a = claim_transactions(a)
            before_b = claim_transactions(b)
            start = time.monotonic()
            answer = await claimer.call("POST", "/keys/claim", {"one_time_keys": wanted})
            latencies.append(time.monotonic() - start)
            claimed.append(sum(len(d) for d in answer["one_time_keys"].values()))
            assert not answer["failures"], answer["failures"]
            costs_a.append(claim_transactions(a) - before_a)
            costs_b.append(claim_transactions(b) - before_b)
        return {"devices_per_claim": sum(len(d) for d in wanted.values()),
                "keys_claimed_per_claim": claimed,
                "claim_transactions_on_first_server_per_claim": costs_a,
                "claim_requests_served_by_second_server_per_claim": costs_b,
                "claim_latency": summary(latencies)}


async def device_list_latency(a: RoostProcess, b: RoostProcess, rounds: int) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        watcher, _ = await account(session, a.base_url, "watcher")
        local, local_reg = await account(session, a.base_url, "local")
        remote, remote_reg = await account(session, b.base_url, "remote")
        room = (await watcher.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        await local.call("POST", f"/join/{quote(room)}", {})
        await remote.call("POST", f"/join/{quote(room)}?server_name={quote(a.server_name)}", {})
        since = (await watcher.call("GET", "/sync?timeout=0"))["next_batch"]
        results: dict[str, list[float]] = {"local": [], "remote": []}
        for _ in range(rounds):
            for kind, server, name in (("local", a, "local"), ("remote", b, "remote")):
                user_id = (local_reg if kind == "local" else remote_reg)["user_id"]
                since = await _drain(watcher, since)
                _, reg = await login(session, server.base_url, name)
                fresh = Client(session, server.base_url, reg["access_token"])
                start = time.monotonic()
                await fresh.call("POST", "/keys/upload",
                                 signed_keys(user_id, reg["device_id"], 0))
                while True:
                    body = await watcher.call("GET", f"/sync?timeout=30000&since={since}")
                    since = body["next_batch"]
                    if user_id in body.get("device_lists", {}).get("changed", []):
                        results[kind].append(time.monotonic() - start)
                        break
        return {k: summary(v) for k, v in results.items()}


async def _drain(client: Client, since: str) -> str:
    return (await client.call("GET", f"/sync?timeout=0&since={since}"))["next_batch"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=50, help="devices per server")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with roost_server(federation=True) as a, roost_server(federation=True) as b:
        print_result("e2e_key_claim_two_servers", asyncio.run(claims(a, b, args.devices,
                                                                     args.rounds)))
        print_result("e2e_device_list_change_to_sync",
                     asyncio.run(device_list_latency(a, b, args.rounds)))


if __name__ == "__main__":
    main()
