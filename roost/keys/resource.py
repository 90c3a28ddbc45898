"""What `/_matrix/key/v2/*` answers: this server's keys, and keys vouched for as a notary.

This module builds the response bodies; it holds no HTTP. The HTTP glue is
`roost/federation/transport/key_resource.py`, because the JSON resource base
lives above `keys` and `keys` may import only `storage`.

Our key response is valid for one day (`KEY_RESPONSE_VALIDITY_MS`): servers
and notaries cache it until then, so a key the operator replaces stops being
trusted for new signatures within a day, while each remote server asks for
our keys about once a day, which costs nothing. The spec discourages answers
valid for less than an hour, and caps what anyone honours at seven days.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from roost.keys.local import LocalKey
from roost.keys.remote import JsonDict, KeyRing
from roost.storage.server_keys import LocalKeyRecord, ServerKeyStore

KEY_RESPONSE_VALIDITY_MS = 86_400_000
# One notary query may name at most this many servers: each may cost a fetch,
# so an unbounded list would make this server a request amplifier.
MAX_SERVERS_PER_QUERY = 100


class KeyQueryError(Exception):
    """A malformed key query; answered with 400 and `errcode`."""

    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message


class KeyServer:
    """Publishes this server's keys and answers notary queries."""

    def __init__(self, clock: IReactorTime, local_key: LocalKey, store: ServerKeyStore,
                 keyring: KeyRing) -> None:
        self._clock = clock
        self._local = local_key
        self._store = store
        self._keyring = keyring
        self._old_keys: list[LocalKeyRecord] = []

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def start(self) -> None:
        """Record the key in use (retiring any other) and load the old keys to publish.

        Run once before the key ring and the listeners are used: that is what
        turns replacing the signing key file into a key rotation.
        """
        await self._store.record_local_key(
            self._local.key_id, self._local.verify_key_base64, self._now_ms()
        )
        self._old_keys = await self._store.get_old_local_keys()

    def own_keys(self) -> JsonDict:
        """The body of `GET /_matrix/key/v2/server`, signed by the current key."""
        body: JsonDict = {
            "server_name": self._local.server_name,
            "verify_keys": {self._local.key_id: {"key": self._local.verify_key_base64}},
            "old_verify_keys": {
                k.key_id: {"key": k.verify_key, "expired_ts": k.expired_ts}
                for k in self._old_keys if k.key_id != self._local.key_id
            },
            "valid_until_ts": self._now_ms() + KEY_RESPONSE_VALIDITY_MS,
        }
        return self._local.sign_json(body)

    async def query(self, body: Any) -> JsonDict:
        """The body of `POST /_matrix/key/v2/query`."""
        if not isinstance(body, dict) or not isinstance(body.get("server_keys"), dict):
            raise KeyQueryError("M_BAD_JSON", "server_keys must be an object")
        servers = body["server_keys"]
        if len(servers) > MAX_SERVERS_PER_QUERY:
            raise KeyQueryError("M_TOO_LARGE", f"at most {MAX_SERVERS_PER_QUERY} servers per query")
        now = self._now_ms()
        queries = [(name, *_criteria(name, criteria, now)) for name, criteria in servers.items()]
        results = await defer.gatherResults(
            [defer.ensureDeferred(self._answer(*q)) for q in queries], consumeErrors=True
        )
        return {"server_keys": [r for answer in results for r in answer]}

    async def query_server(self, server_name: str, min_valid_until_ms: int | None) -> JsonDict:
        """The body of `GET /_matrix/key/v2/query/{serverName}`."""
        min_valid = self._now_ms() if min_valid_until_ms is None else min_valid_until_ms
        return {"server_keys": await self._answer(server_name, [], min_valid)}

    async def _answer(self, server_name: str, key_ids: list[str], min_valid: int) -> list[JsonDict]:
        if server_name == self._local.server_name:
            return [self.own_keys()]
        responses = await self._keyring.notary_responses(server_name, key_ids, min_valid)
        return [self._cosign(r) for r in responses]

    def _cosign(self, response: Mapping[str, Any]) -> JsonDict:
        """A copy of a server's self-signed response with this server's signature added."""
        signed = dict(response)
        signed["signatures"] = {name: dict(sigs) for name, sigs in response["signatures"].items()}
        return self._local.sign_json(signed)


def _criteria(server_name: Any, criteria: Any, now: int) -> tuple[list[str], int]:
    """Key ids asked for, and the latest minimum_valid_until_ts among them.

    A criterion without a timestamp means now, as does asking for no key id;
    a timestamp in the past is honoured, since that is how an old event's
    signature gets checked against a key that has since expired.
    """
    if not isinstance(server_name, str) or not isinstance(criteria, dict):
        raise KeyQueryError("M_BAD_JSON", "each server's criteria must be an object")
    stamps = []
    for key_id, criterion in criteria.items():
        if not isinstance(criterion, dict):
            raise KeyQueryError("M_BAD_JSON", f"criteria for {key_id} must be an object")
        ts = criterion.get("minimum_valid_until_ts", now)
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise KeyQueryError("M_BAD_JSON", "minimum_valid_until_ts must be an integer")
        stamps.append(ts)
    return list(criteria), max(stamps, default=now)
