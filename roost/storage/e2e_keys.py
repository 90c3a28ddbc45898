"""Device keys, one-time and fallback keys, cross-signing keys and their signatures.

Keys are stored as the JSON the client signed; signatures uploaded later
(/keys/signatures/upload) are kept in their own table and merged in when keys
are served, so the signed object itself never changes. A one-time key is
claimed by deleting its row with `FOR UPDATE SKIP LOCKED`: two concurrent
claims for one device each take a different key, and no key is handed out
twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from roost.storage.database import Database, Txn

JsonDict = dict[str, Any]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class KeyConflict(Exception):
    """An upload would replace what may not be replaced (identity keys, a one-time key)."""


class E2eKeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # (user, device) -> (one-time key counts, unused fallback key types): every /sync
        # serves both, and they change only through upload and claim, here.
        self._sync_counts: dict[tuple[str, str], tuple[dict[str, int], list[str]]] = {}
        self._changes = 0  # uploads and claims so far; a read overlapping one is not kept

    def _changed(self, devices: Iterable[tuple[str, str]]) -> None:
        self._changes += 1
        for key in devices:
            self._sync_counts.pop(key, None)

    def held_sync_counts(self, user_id: str, device_id: str
                         ) -> tuple[dict[str, int], list[str]] | None:
        """`sync_counts` when held (no read), else None."""
        return self._sync_counts.get((user_id, device_id))

    async def sync_counts(self, user_id: str, device_id: str) -> tuple[dict[str, int], list[str]]:
        """The device's one-time key counts and unused fallback key types, for /sync."""
        key = (user_id, device_id)
        cached = self._sync_counts.get(key)
        if cached is not None:
            return cached
        changes = self._changes

        def txn_fn(txn: Txn) -> tuple[dict[str, int], list[str]]:
            rows = txn.query("SELECT algorithm FROM e2e_fallback_keys WHERE user_id = %s"
                             " AND device_id = %s AND NOT used ORDER BY algorithm", key)
            return _counts(txn, user_id, device_id), [r[0] for r in rows]

        found = await self._db.run("e2e_sync_counts", txn_fn)
        if changes == self._changes:
            if len(self._sync_counts) >= 100_000:
                self._sync_counts.clear()
            self._sync_counts[key] = found
        return found

    # -- device keys, one-time keys, fallback keys ---------------------------------

    async def upload(self, user_id: str, device_id: str, device_keys: JsonDict | None,
                     one_time: dict[str, Any], fallback: dict[str, Any]) -> tuple[bool, dict[str, int]]:
        """Store what a device uploaded; (device keys new or changed, one-time key counts).

        Raises KeyConflict (and writes nothing) when the device's identity keys
        differ from those already stored, or a one-time key id is reused with a
        different key.
        """

        def txn_fn(txn: Txn) -> tuple[bool, dict[str, int]]:
            changed = False
            if device_keys is not None:
                row = txn.query_one(
                    "SELECT key_json FROM e2e_device_keys WHERE user_id = %s AND device_id = %s"
                    " FOR UPDATE", (user_id, device_id))
                if row is None:
                    txn.execute("INSERT INTO e2e_device_keys (user_id, device_id, key_json)"
                                " VALUES (%s, %s, %s)", (user_id, device_id, _dumps(device_keys)))
                    changed = True
                else:
                    old = json.loads(row[0])
                    if old.get("keys") != device_keys.get("keys"):
                        raise KeyConflict("this device's identity keys are already uploaded"
                                          " and cannot be replaced")
                    if old != device_keys:
                        txn.execute("UPDATE e2e_device_keys SET key_json = %s WHERE user_id = %s"
                                    " AND device_id = %s", (_dumps(device_keys), user_id, device_id))
                        changed = True
            if one_time:
                _add_one_time_keys(txn, user_id, device_id, one_time)
            for algorithm, (key_id, key) in fallback.items():
                txn.execute(
                    "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id,"
                    " key_json, used) VALUES (%s, %s, %s, %s, %s, FALSE)"
                    " ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET"
                    " key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json,"
                    " used = e2e_fallback_keys.used AND e2e_fallback_keys.key_json"
                    " = EXCLUDED.key_json",
                    (user_id, device_id, algorithm, key_id, _dumps(key)))
            return changed, _counts(txn, user_id, device_id)

        try:
            return await self._db.run("e2e_upload", txn_fn)
        finally:
            self._changed([(user_id, device_id)])

    async def claim(self, wanted: list[tuple[str, str, str]]) -> dict[str, dict[str, JsonDict]]:
        """Claim one key per (user, device, algorithm): a one-time key, else the fallback key.

        Returns {user: {device: {"algorithm:key_id": key}}}; devices with neither
        are left out. One transaction for the whole request.
        """

        def txn_fn(txn: Txn) -> dict[str, dict[str, JsonDict]]:
            out: dict[str, dict[str, JsonDict]] = {}
            wanted_set = list(dict.fromkeys(wanted))
            columns = ([w[0] for w in wanted_set], [w[1] for w in wanted_set],
                       [w[2] for w in wanted_set])
            # One statement for every device: each takes its lowest free key; a key another
            # claim holds locked is skipped, so concurrent claims never share a key.
            rows = txn.query(
                "WITH picked AS (SELECT k.user_id, k.device_id, k.algorithm, k.key_id"
                " FROM unnest(%s::text[], %s::text[], %s::text[]) AS w (u, d, a)"
                " CROSS JOIN LATERAL (SELECT user_id, device_id, algorithm, key_id"
                "  FROM e2e_one_time_keys o WHERE o.user_id = w.u AND o.device_id = w.d"
                "  AND o.algorithm = w.a ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) k)"
                " DELETE FROM e2e_one_time_keys o USING picked p WHERE o.user_id = p.user_id"
                " AND o.device_id = p.device_id AND o.algorithm = p.algorithm"
                " AND o.key_id = p.key_id"
                " RETURNING o.user_id, o.device_id, o.algorithm, o.key_id, o.key_json", columns)
            got = {(r[0], r[1], r[2]) for r in rows}
            missing = [w for w in wanted_set if w not in got]
            if missing:
                rows += txn.query(
                    "UPDATE e2e_fallback_keys f SET used = TRUE"
                    " FROM unnest(%s::text[], %s::text[], %s::text[]) AS w (u, d, a)"
                    " WHERE f.user_id = w.u AND f.device_id = w.d AND f.algorithm = w.a"
                    " RETURNING f.user_id, f.device_id, f.algorithm, f.key_id, f.key_json",
                    ([w[0] for w in missing], [w[1] for w in missing], [w[2] for w in missing]))
            for user_id, device_id, algorithm, key_id, key_json in rows:
                out.setdefault(user_id, {})[device_id] = {
                    f"{algorithm}:{key_id}": json.loads(key_json)}
            return out

        try:
            return await self._db.run("e2e_claim", txn_fn)
        finally:
            self._changed({(w[0], w[1]) for w in wanted})

    async def device_keys(self, users: dict[str, list[str]]) -> dict[str, dict[str, JsonDict]]:
        """{user: {device: keys}} for the devices asked for (an empty list: all of them),
        with the device's display name in `unsigned` and uploaded signatures merged in."""
        if not users:
            return {}

        def txn_fn(txn: Txn) -> dict[str, dict[str, JsonDict]]:
            rows = txn.query(
                "SELECT k.user_id, k.device_id, k.key_json, d.display_name"
                " FROM e2e_device_keys k JOIN devices d USING (user_id, device_id)"
                " WHERE k.user_id = ANY(%s)", (list(users),))
            out: dict[str, dict[str, JsonDict]] = {}
            for user_id, device_id, key_json, name in rows:
                if users[user_id] and device_id not in users[user_id]:
                    continue
                keys = json.loads(key_json)
                if name is not None:
                    keys["unsigned"] = {**keys.get("unsigned", {}), "device_display_name": name}
                out.setdefault(user_id, {})[device_id] = keys
            sigs = txn.query(
                "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature"
                " FROM e2e_signatures WHERE target_user_id = ANY(%s)"
                " AND signer_user_id = target_user_id", (list(users),))
            for target, key_id, signer, signer_key, signature in sigs:
                device = out.get(target, {}).get(key_id)
                if device is not None:
                    device.setdefault("signatures", {}).setdefault(signer, {})[signer_key] = signature
            return out

        return await self._db.run("e2e_device_keys", txn_fn)

    async def all_device_ids(self, user_id: str) -> list[str]:
        """Every device of a local user, with or without keys (the targets of `*`)."""
        rows = await self._db.run("e2e_all_devices", lambda t: t.query(
            "SELECT device_id FROM devices WHERE user_id = %s", (user_id,)))
        return [r[0] for r in rows]

    # -- cross-signing ----------------------------------------------------------------

    async def cross_signing_keys(self, user_ids: Iterable[str], requester: str | None
                                 ) -> dict[str, dict[str, JsonDict]]:
        """{user: {key_type: key}}; signatures by the user themself and by `requester`
        merged in. user_signing keys are only returned for `requester`'s own user."""
        ids = list(user_ids)
        if not ids:
            return {}

        def txn_fn(txn: Txn) -> dict[str, dict[str, JsonDict]]:
            rows = txn.query("SELECT user_id, key_type, key_json FROM e2e_cross_signing_keys"
                             " WHERE user_id = ANY(%s)", (ids,))
            out: dict[str, dict[str, JsonDict]] = {}
            by_pub: dict[tuple[str, str], JsonDict] = {}
            for user_id, key_type, key_json in rows:
                if key_type == "user_signing" and user_id != requester:
                    continue
                key = json.loads(key_json)
                out.setdefault(user_id, {})[key_type] = key
                for pub in _public_keys(key):
                    by_pub[(user_id, pub)] = key
            sigs = txn.query(
                "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature"
                " FROM e2e_signatures WHERE target_user_id = ANY(%s)"
                " AND (signer_user_id = target_user_id OR signer_user_id = %s)", (ids, requester))
            for target, key_id, signer, signer_key, signature in sigs:
                key = by_pub.get((target, key_id))
                if key is not None:
                    key.setdefault("signatures", {}).setdefault(signer, {})[signer_key] = signature
            return out

        return await self._db.run("e2e_cross_signing_keys", txn_fn)

    async def set_cross_signing_keys(self, user_id: str, keys: dict[str, JsonDict]) -> None:
        def txn_fn(txn: Txn) -> None:
            for key_type, key in keys.items():
                txn.execute(
                    "INSERT INTO e2e_cross_signing_keys (user_id, key_type, key_json)"
                    " VALUES (%s, %s, %s) ON CONFLICT (user_id, key_type) DO UPDATE"
                    " SET key_json = EXCLUDED.key_json", (user_id, key_type, _dumps(key)))

        await self._db.run("e2e_set_cross_signing", txn_fn)

    async def add_signatures(self, rows: list[tuple[str, str, str, str, str]]) -> None:
        """(signer user, signer key id, target user, target key id, signature) rows."""
        if not rows:
            return
        await self._db.run("e2e_add_signatures", lambda t: t.execute_values(
            "INSERT INTO e2e_signatures (signer_user_id, signer_key_id, target_user_id,"
            " target_key_id, signature) VALUES %s ON CONFLICT (target_user_id, target_key_id,"
            " signer_user_id, signer_key_id) DO UPDATE SET signature = EXCLUDED.signature",
            rows))


def _public_keys(key: JsonDict) -> list[str]:
    keys = key.get("keys")
    return [str(v) for v in keys.values()] if isinstance(keys, dict) else []


def _add_one_time_keys(txn: Txn, user_id: str, device_id: str, one_time: dict[str, Any]) -> None:
    parsed = [(k.split(":", 1)[0], k.split(":", 1)[1], _dumps(v)) for k, v in one_time.items()]
    existing = txn.query(
        "SELECT algorithm, key_id, key_json FROM e2e_one_time_keys WHERE user_id = %s"
        " AND device_id = %s AND (algorithm, key_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        (user_id, device_id, [p[0] for p in parsed], [p[1] for p in parsed]))
    have = {(a, k): j for a, k, j in existing}
    for algorithm, key_id, key_json in parsed:
        if (algorithm, key_id) in have and have[(algorithm, key_id)] != key_json:
            raise KeyConflict(f"one-time key {algorithm}:{key_id} already exists with another key")
    new = [(user_id, device_id, a, k, j) for a, k, j in parsed if (a, k) not in have]
    if new:
        txn.execute_values(
            "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)"
            " VALUES %s ON CONFLICT DO NOTHING", new)


def _counts(txn: Txn, user_id: str, device_id: str) -> dict[str, int]:
    rows = txn.query("SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = %s"
                     " AND device_id = %s GROUP BY algorithm", (user_id, device_id))
    return {"signed_curve25519": 0, **{r[0]: int(r[1]) for r in rows}}
