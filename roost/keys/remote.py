"""Verifying other servers' signatures: the key ring.

A signature is checked against the signing server's verify key, looked up in
this order: memory, the database, the server itself (`GET
/_matrix/key/v2/server`), then the configured notaries (`POST
/_matrix/key/v2/query`). Each step is asked only for the key ids the earlier
ones could not answer. A key vouches for a signature only if it was valid at
the time the signature must be good for: an event's origin_server_ts, or now
for a request. That is one rule for current keys (their valid_until_ts,
capped at seven days after fetching as the spec requires) and old keys (their
expired_ts).

The network is reached through an injected `KeyFetcher`, so this package
never imports federation. Lookups for one server are serialised, so a burst
of events from one origin costs one key request, and a key id that the
network could not supply is not asked for again for a minute: a flood of
events naming a bogus key must not become a flood of key requests.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import signedjson.key
import signedjson.sign
from nacl.signing import VerifyKey
from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorTime

from roost.keys.local import LocalKey
from roost.storage.server_keys import NewKey, ServerKeyStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

# The spec: use the lesser of valid_until_ts and seven days into the future.
MAX_KEY_VALIDITY_MS = 7 * 86_400_000
# The end of time, for this server's own current key.
FOREVER_MS = 2**62


class KeyFetcher(Protocol):
    """The network, as the key ring needs it (implemented in federation)."""

    async def fetch_server_keys(self, server_name: str) -> JsonDict:
        """`GET /_matrix/key/v2/server` on `server_name`: its response body."""
        ...

    async def query_notary(
        self, notary: str, server_keys: Mapping[str, Mapping[str, int]]
    ) -> list[JsonDict]:
        """`POST /_matrix/key/v2/query` on `notary`: {server: {key_id: min_valid_until_ts}}."""
        ...


class KeyVerificationError(Exception):
    """A signature could not be verified: missing, wrong, or no usable key."""

    def __init__(self, server_name: str, reason: str) -> None:
        super().__init__(f"{server_name}: {reason}")
        self.server_name = server_name
        self.reason = reason


class BadKeyResponseError(Exception):
    """A key response that is malformed or not signed as it must be."""


@dataclass(frozen=True)
class Notary:
    """A trusted key server and the keys its answers must be signed with."""

    server_name: str
    verify_keys: Mapping[str, VerifyKey]

    @classmethod
    def from_base64(cls, server_name: str, keys: Mapping[str, str]) -> Notary:
        """Build from configuration: key ids to unpadded base64 public keys."""
        return cls(server_name, {key_id: decode_key(key_id, b64) for key_id, b64 in keys.items()})


@dataclass(frozen=True)
class VerifyRequest:
    """One signed object to check: signed by `server_name`, good at `min_valid_until_ms`."""

    server_name: str
    json_object: Mapping[str, Any]
    min_valid_until_ms: int


@dataclass(frozen=True)
class KnownKey:
    verify_key: VerifyKey
    valid_until_ts: int


def decode_key(key_id: str, key_base64: str) -> VerifyKey:
    """A verify key from its id (`ed25519:version`) and unpadded base64."""
    alg, _, version = key_id.partition(":")
    if alg != "ed25519" or not version:
        raise ValueError(f"unsupported key id {key_id!r}")
    return signedjson.key.decode_verify_key_base64(alg, version, key_base64)


def signing_key_ids(json_object: Mapping[str, Any], server_name: str) -> list[str]:
    """The ed25519 key ids `server_name` signed `json_object` with."""
    signatures = json_object.get("signatures")
    if not isinstance(signatures, dict):
        return []
    by_server = signatures.get(server_name)
    if not isinstance(by_server, dict):
        return []
    return [key_id for key_id in by_server if isinstance(key_id, str) and key_id.startswith("ed25519:")]


def _verify(json_object: Mapping[str, Any], server_name: str, key: VerifyKey) -> None:
    try:
        signedjson.sign.verify_signed_json(dict(json_object), server_name, key)
    except Exception as e:  # SignatureVerifyException, or JSON that cannot be canonical
        raise KeyVerificationError(server_name, f"bad signature: {e}") from None


def parse_key_response(response: Any, server_name: str, now_ms: int) -> tuple[JsonDict, list[NewKey]]:
    """Check a server's self-signed key response; return it (own signatures only) and its keys.

    Every signature the server made on it must be by a key it lists as current
    and must verify, and there must be at least one: otherwise anyone could hand
    out keys in the server's name.
    """
    if not isinstance(response, dict) or response.get("server_name") != server_name:
        raise BadKeyResponseError(f"not a key response for {server_name}")
    valid_until = response.get("valid_until_ts")
    if not isinstance(valid_until, int) or isinstance(valid_until, bool):
        raise BadKeyResponseError("valid_until_ts missing or not an integer")
    current = _keys_of(response.get("verify_keys"), old=False)
    old = _keys_of(response.get("old_verify_keys", {}), old=True)
    key_ids = signing_key_ids(response, server_name)
    if not key_ids:
        raise BadKeyResponseError(f"key response not signed by {server_name}")
    for key_id in key_ids:
        if key_id not in current:
            raise BadKeyResponseError(f"key response signed by unlisted key {key_id}")
        try:
            _verify(response, server_name, current[key_id][0])
        except KeyVerificationError as e:
            raise BadKeyResponseError(e.reason) from None
    capped = min(valid_until, now_ms + MAX_KEY_VALIDITY_MS)
    keys = [NewKey(k, _b64(v), capped) for k, (v, _) in current.items()]
    keys += [NewKey(k, _b64(v), expired) for k, (v, expired) in old.items() if k not in current]
    own = dict(response)
    own["signatures"] = {server_name: response["signatures"][server_name]}
    return own, keys


def _keys_of(section: Any, old: bool) -> dict[str, tuple[VerifyKey, int]]:
    """Parse verify_keys or old_verify_keys: key id -> (key, expired_ts or 0)."""
    if not isinstance(section, dict):
        raise BadKeyResponseError("verify_keys missing or not an object")
    keys = {}
    for key_id, entry in section.items():
        if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
            continue  # an algorithm this server does not know; not an error
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise BadKeyResponseError(f"{key_id}: no key")
        expired = entry.get("expired_ts", 0) if old else 0
        if not isinstance(expired, int) or isinstance(expired, bool) or (old and "expired_ts" not in entry):
            raise BadKeyResponseError(f"{key_id}: expired_ts missing or not an integer")
        try:
            keys[key_id] = (decode_key(key_id, entry["key"]), expired)
        except Exception:
            raise BadKeyResponseError(f"{key_id}: key is not valid base64 ed25519") from None
    return keys


def _b64(key: VerifyKey) -> str:
    return signedjson.key.encode_verify_key_base64(key)


def response_valid_until(response: Mapping[str, Any], key_id: str | None) -> int:
    """How late `response` vouches for `key_id` (any current key when None); -1 if not at all."""
    if key_id is None or key_id in response.get("verify_keys", {}):
        value = response.get("valid_until_ts", -1)
        return value if isinstance(value, int) else -1
    old = response.get("old_verify_keys", {}).get(key_id)
    if isinstance(old, dict) and isinstance(old.get("expired_ts"), int):
        return old["expired_ts"]
    return -1


# From this many signatures up, verify_many checks them off the reactor thread.
THREAD_BATCH = 8


class KeyRing:
    """Verifies signatures of any server, fetching and caching keys as needed."""

    def __init__(
        self,
        clock: IReactorTime,
        store: ServerKeyStore,
        local_key: LocalKey,
        fetcher: KeyFetcher | None = None,
        notaries: Sequence[Notary] = (),
        *,
        cache_servers: int = 10_000,
        miss_retry_ms: int = 60_000,
    ) -> None:
        self._clock = clock
        self._store = store
        self._local = local_key
        self._fetcher = fetcher
        self._notaries = list(notaries)
        self._cache: OrderedDict[str, dict[str, KnownKey]] = OrderedDict()
        self._cache_servers = cache_servers
        self._misses: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._miss_retry_ms = miss_retry_ms
        self._locks: dict[str, defer.DeferredLock] = {}
        self._local_keys: dict[str, KnownKey] | None = None

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def verify_json_for_server(
        self, server_name: str, json_object: Mapping[str, Any], min_valid_until_ms: int
    ) -> None:
        """Raise KeyVerificationError unless `server_name` signed `json_object` validly."""
        (error,) = await self.verify_many([VerifyRequest(server_name, json_object, min_valid_until_ms)])
        if error is not None:
            raise error

    async def verify_many(self, requests: Sequence[VerifyRequest]) -> list[KeyVerificationError | None]:
        """Check many signatures with one key lookup per server; an error or None for each."""
        wanted: dict[str, dict[str, int]] = defaultdict(dict)
        for req in requests:
            for key_id in signing_key_ids(req.json_object, req.server_name):
                have = wanted[req.server_name].get(key_id, -1)
                wanted[req.server_name][key_id] = max(have, req.min_valid_until_ms)
        servers = list(wanted)
        try:
            found = await defer.gatherResults(
                [defer.ensureDeferred(self._lookup(s, wanted[s])) for s in servers],
                consumeErrors=True,
            )
        except defer.FirstError as e:
            e.subFailure.raiseException()
        keys = dict(zip(servers, found, strict=True))
        if len(requests) < THREAD_BATCH:
            return [self._check(req, keys.get(req.server_name, {})) for req in requests]
        # A transaction's worth of signatures (canonical JSON and ed25519 for each) is
        # milliseconds of CPU: check them on a worker thread, not the reactor.
        return await threads.deferToThread(
            lambda: [self._check(req, keys.get(req.server_name, {})) for req in requests])

    @staticmethod
    def _check(req: VerifyRequest, keys: Mapping[str, KnownKey]) -> KeyVerificationError | None:
        key_ids = signing_key_ids(req.json_object, req.server_name)
        if not key_ids:
            return KeyVerificationError(req.server_name, "not signed by this server")
        usable = [k for k in key_ids if k in keys and keys[k].valid_until_ts >= req.min_valid_until_ms]
        if not usable:
            return KeyVerificationError(
                req.server_name, f"no key valid at {req.min_valid_until_ms} among {sorted(key_ids)}"
            )
        try:
            for key_id in usable:
                _verify(req.json_object, req.server_name, keys[key_id].verify_key)
        except KeyVerificationError as e:
            return e
        return None

    async def _lookup(self, server_name: str, wanted: Mapping[str, int]) -> dict[str, KnownKey]:
        """The best keys known for `wanted` (key id -> validity needed), fetching what is missing."""
        if server_name == self._local.server_name:
            return await self._own_keys()
        found = self._from_memory(server_name, wanted)
        if not _missing(found, wanted):
            return found
        lock = self._locks.setdefault(server_name, defer.DeferredLock())
        await lock.acquire()
        try:
            return await self._lookup_locked(server_name, wanted)
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(server_name, None)

    async def _lookup_locked(self, server_name: str, wanted: Mapping[str, int]) -> dict[str, KnownKey]:
        # Another lookup may have filled the cache while this one waited.
        found = self._from_memory(server_name, wanted)
        missing = _missing(found, wanted)
        if not missing:
            return found
        for stored in (await self._store.get_keys(server_name, missing)).values():
            known = KnownKey(decode_key(stored.key_id, stored.verify_key), stored.valid_until_ts)
            self._remember(server_name, {stored.key_id: known})
        found = self._from_memory(server_name, wanted)
        missing = _missing(found, wanted)
        if not missing or self._recently_missed(server_name, missing):
            return found
        if await self._fetch_direct(server_name):
            found = self._from_memory(server_name, wanted)
            missing = _missing(found, wanted)
        for notary in self._notaries:
            if not missing:
                break
            await self._fetch_from_notary(notary, server_name, missing)
            found = self._from_memory(server_name, wanted)
            missing = _missing(found, wanted)
        self._note_misses(server_name, missing)
        return found

    async def _own_keys(self) -> dict[str, KnownKey]:
        """This server's current key (valid for ever) and its old keys (until they expired)."""
        if self._local_keys is None:
            old = await self._store.get_old_local_keys()
            keys = {r.key_id: KnownKey(decode_key(r.key_id, r.verify_key), r.expired_ts or 0) for r in old}
            current = signedjson.key.get_verify_key(self._local.signing_key)
            keys[self._local.key_id] = KnownKey(current, FOREVER_MS)
            self._local_keys = keys
        return self._local_keys

    async def _fetch_direct(self, server_name: str) -> bool:
        """Ask the server itself; True if it answered with a valid response."""
        if self._fetcher is None:
            return False
        try:
            response = await self._fetcher.fetch_server_keys(server_name)
            await self._accept(server_name, server_name, response)
            return True
        except Exception as e:
            logger.info("fetching keys of %s directly failed: %s", server_name, e)
            return False

    async def _fetch_from_notary(self, notary: Notary, server_name: str, missing: Mapping[str, int]) -> None:
        if self._fetcher is None:
            return
        try:
            responses = await self._fetcher.query_notary(notary.server_name, {server_name: missing})
        except Exception as e:
            logger.info("asking %s for keys of %s failed: %s", notary.server_name, server_name, e)
            return
        for response in responses:
            if not isinstance(response, dict) or response.get("server_name") != server_name:
                continue
            try:
                self._check_notary_signature(notary, response)
                await self._accept(server_name, notary.server_name, response)
            except (BadKeyResponseError, KeyVerificationError) as e:
                logger.warning("notary %s gave a bad response for %s: %s",
                               notary.server_name, server_name, e)

    @staticmethod
    def _check_notary_signature(notary: Notary, response: Mapping[str, Any]) -> None:
        key_ids = [k for k in signing_key_ids(response, notary.server_name) if k in notary.verify_keys]
        if not key_ids:
            raise BadKeyResponseError(f"not signed by a configured key of {notary.server_name}")
        for key_id in key_ids:
            _verify(response, notary.server_name, notary.verify_keys[key_id])

    async def _accept(self, server_name: str, from_server: str, response: Any) -> None:
        """Verify a key response, then store it and remember its keys."""
        now = self.now_ms()
        own, keys = parse_key_response(response, server_name, now)
        await self._store.store_response(server_name, from_server, own, keys, now)
        self._remember(server_name, {
            k.key_id: KnownKey(decode_key(k.key_id, k.verify_key), k.valid_until_ts) for k in keys
        })

    async def notary_responses(
        self, server_name: str, key_ids: Iterable[str], min_valid_until_ms: int
    ) -> list[JsonDict]:
        """What this server, as a notary, knows of `server_name`'s keys, each self-signed.

        Cached responses are served when they satisfy the query; otherwise the
        server is asked directly (never another notary, so notaries cannot send
        each other round in circles), and if it cannot be reached the cached
        responses are served anyway, as the spec asks, so that old events
        remain verifiable. A server this one has never had keys from is not
        fetched at all: the query is unauthenticated, and a caller naming
        arbitrary hosts must not make this server connect to them.
        """
        wanted = list(key_ids) or [None]
        responses = await self._store.get_responses(server_name)
        if not responses:
            return []
        if _responses_satisfy(responses, wanted, min_valid_until_ms):
            return responses
        names = [k or "*" for k in wanted]
        if self._recently_missed(server_name, names):
            return responses
        if await self._fetch_direct(server_name):
            return await self._store.get_responses(server_name)
        self._note_misses(server_name, names)
        return responses

    def _from_memory(self, server_name: str, wanted: Iterable[str]) -> dict[str, KnownKey]:
        keys = self._cache.get(server_name)
        if keys is None:
            return {}
        self._cache.move_to_end(server_name)
        return {k: keys[k] for k in wanted if k in keys}

    def _remember(self, server_name: str, keys: Mapping[str, KnownKey]) -> None:
        cached = self._cache.setdefault(server_name, {})
        self._cache.move_to_end(server_name)
        for key_id, known in keys.items():
            have = cached.get(key_id)
            if have is None or known.valid_until_ts >= have.valid_until_ts:
                cached[key_id] = known
        while len(self._cache) > self._cache_servers:
            self._cache.popitem(last=False)

    def _recently_missed(self, server_name: str, key_ids: Iterable[str]) -> bool:
        """True if the network was asked for every one of `key_ids` lately, in vain."""
        now = self.now_ms()
        return all(
            now - self._misses.get((server_name, k), -self._miss_retry_ms) < self._miss_retry_ms
            for k in key_ids
        )

    def _note_misses(self, server_name: str, key_ids: Iterable[str]) -> None:
        now = self.now_ms()
        for key_id in key_ids:
            self._misses[(server_name, key_id)] = now
            self._misses.move_to_end((server_name, key_id))
        while len(self._misses) > self._cache_servers:
            self._misses.popitem(last=False)


def _missing(found: Mapping[str, KnownKey], wanted: Mapping[str, int]) -> dict[str, int]:
    return {k: v for k, v in wanted.items() if k not in found or found[k].valid_until_ts < v}


def _responses_satisfy(responses: Sequence[Mapping[str, Any]], key_ids: Sequence[str | None],
                       min_valid_until_ms: int) -> bool:
    return all(
        any(response_valid_until(r, k) >= min_valid_until_ms for r in responses) for k in key_ids
    )
