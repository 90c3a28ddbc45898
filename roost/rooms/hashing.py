"""Canonical JSON, hashes and signatures of events (spec: server-server API,
"Signing Events"; appendices, "Canonical JSON" and "Signing JSON").

Everything here works on plain PDU dicts, so it can run before an ``Event`` can
be built (``builder.finalize_pdu``) and underneath ``Event`` (event ids). The
functions never modify their arguments: they return new dicts.

``canonical_json`` lives here rather than in ``events`` so that ``events`` can
depend on this module without a cycle; ``events`` re-exports it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from canonicaljson import encode_canonical_json
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey as NaclVerifyKey
from unpaddedbase64 import encode_base64

from roost.rooms.redaction import redacted_view
from roost.rooms.versions import RoomVersion

__all__ = [
    "CANONICAL_INT_MAX",
    "CANONICAL_INT_MIN",
    "CanonicalJSONError",
    "SignatureVerifyError",
    "SigningKey",
    "VerifyKey",
    "add_content_hash",
    "canonical_json",
    "check_content_hash",
    "compute_content_hash",
    "compute_event_id",
    "compute_reference_hash",
    "server_name_of",
    "servers_that_must_sign",
    "sign_event",
    "signed_by_any_public_key",
    "verify_event_signature",
]

CANONICAL_INT_MAX = 2**53 - 1
CANONICAL_INT_MIN = -(2**53) + 1


class SigningKey(Protocol):
    """A signedjson signing key: a nacl SigningKey carrying ``alg`` and ``version``."""

    alg: str
    version: str

    def sign(self, message: bytes) -> Any: ...


class VerifyKey(Protocol):
    """A signedjson verify key: a nacl VerifyKey carrying ``alg`` and ``version``."""

    alg: str
    version: str

    def verify(self, smessage: bytes, signature: bytes) -> Any: ...


class CanonicalJSONError(ValueError):
    """The value cannot be encoded as Matrix canonical JSON."""


class SignatureVerifyError(ValueError):
    """An event lacks a valid signature from the server and key asked about."""


def canonical_json(value: object, *, checked: bool = False, walked: bool = False) -> bytes:
    """Encode ``value`` as Matrix canonical JSON, enforcing the number rules.

    The encoder alone would happily write floats and integers beyond 2**53,
    which other servers cannot represent; v6+ rooms forbid both, so they are
    refused here rather than producing bytes nobody else would hash the same.
    ``checked`` skips that walk for a value already checked whole (the redacted
    form of a checked event, an event this server just built): the walk was a
    fifth of a local send's cost when every step repeated it.

    A value the walk passed (here, or before: ``walked``) holds only strings, in-range
    integers, booleans, nulls, lists and string-keyed objects, which orjson writes
    byte for byte as canonicaljson does (sorted by code point, compact, UTF-8,
    the same escapes; tests/rooms/test_hashing.py compares them) about twenty
    times faster: a local send encodes its event three times. Floats are where the
    two differ (their notation), and a value that was not walked may hold them: it
    goes to canonicaljson. So does anything orjson refuses (nesting past its limit,
    a lone surrogate), which then answers as before.
    """
    if not checked:
        _check_canonical(value)
        walked = True
    if walked:
        try:
            encoded = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
        else:
            # orjson's bytes keep the buffer it wrote into (4 KiB for an event of 600
            # bytes); events hold theirs (Event.canonical_bytes) by the thousand in the
            # caches: +4.5 MiB RSS in bench/memory.py. A two-part join is an exact copy.
            return b"".join((encoded, b""))
    try:
        return encode_canonical_json(value)
    except (TypeError, ValueError) as e:  # lone surrogates, unknown types
        raise CanonicalJSONError(str(e)) from e


def _check_canonical(value: object) -> None:
    """Walk ``value`` and refuse anything canonical JSON cannot express.

    The plain types JSON parsing and the builder make (str, int, dict, list, bool,
    None) are told apart by their exact type first: an event is about sixty values,
    and the isinstance chain (through the ABC machinery for Mapping) cost a local
    send more than the walk itself. Anything else (subclasses, tuples, floats, other
    mappings) takes the isinstance checks as before.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if not CANONICAL_INT_MIN <= item <= CANONICAL_INT_MAX:  # type: ignore[operator]
                raise CanonicalJSONError(f"integer out of canonical JSON range: {item}")
            continue
        if kind is dict:
            for key in item:  # type: ignore[attr-defined]
                if type(key) is not str and not isinstance(key, str):
                    raise CanonicalJSONError(f"object key is not a string: {key!r}")
            stack.extend(item.values())  # type: ignore[attr-defined]
            continue
        if kind is list:
            stack.extend(item)  # type: ignore[arg-type]
            continue
        if isinstance(item, bool) or isinstance(item, str):
            continue
        if isinstance(item, int):
            if not CANONICAL_INT_MIN <= item <= CANONICAL_INT_MAX:
                raise CanonicalJSONError(f"integer out of canonical JSON range: {item}")
        elif isinstance(item, float):
            raise CanonicalJSONError("floats are not allowed in canonical JSON")
        elif isinstance(item, Mapping):
            for key in item:
                if not isinstance(key, str):
                    raise CanonicalJSONError(f"object key is not a string: {key!r}")
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        else:
            raise CanonicalJSONError(f"not JSON: {type(item).__name__}")


def compute_content_hash(pdu: Mapping[str, Any], strict: bool = True) -> bytes:
    """SHA-256 over the whole event minus ``unsigned``, ``signatures`` and ``hashes``.

    ``strict=False`` (v1-v5 events, which predate canonical JSON's number rules)
    hashes floats and large integers as they are instead of refusing them.
    """
    stripped = {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(canonical_json(stripped, checked=not strict)).digest()


def add_content_hash(pdu: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``pdu`` with ``hashes.sha256`` set to its content hash.

    The copy is shallow apart from ``hashes``: nested values (content) are
    shared with the input, which callers treat as read-only.
    """
    result = dict(pdu)
    hashes = result.get("hashes")
    hashes = dict(hashes) if isinstance(hashes, dict) else {}
    hashes["sha256"] = encode_base64(compute_content_hash(pdu))
    result["hashes"] = hashes
    return result


def check_content_hash(pdu: Mapping[str, Any], strict: bool = True) -> bool:
    """Whether ``hashes.sha256`` matches the content. False means: use the redacted copy.

    Compares encoded strings rather than decoding the claim, so a sloppily
    encoded claim (padding, stray characters) never passes.
    """
    hashes = pdu.get("hashes")
    if not isinstance(hashes, Mapping):
        return False
    claimed = hashes.get("sha256")
    if not isinstance(claimed, str):
        return False
    try:
        return claimed == encode_base64(compute_content_hash(pdu, strict))
    except CanonicalJSONError:
        return False


def _redacted_for_signing(pdu: Mapping[str, Any], version: RoomVersion) -> dict[str, Any]:
    """The redacted event without signatures/unsigned: what ids and signatures cover."""
    redacted = redacted_view(pdu, version)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return redacted


def compute_reference_hash(pdu: Mapping[str, Any], version: RoomVersion) -> bytes:
    """SHA-256 over the canonical redacted event, minus signatures and unsigned."""
    redacted = _redacted_for_signing(pdu, version)
    return hashlib.sha256(
        canonical_json(redacted, checked=not version.strict_canonical_json)).digest()


def reference_hash_b64(event: Any) -> str:
    """An Event's reference hash in unpadded base64, for v1/v2 ``[id, hashes]`` pairs."""
    return encode_base64(compute_reference_hash(event.pdu, event.version))


def compute_event_id(pdu: Mapping[str, Any], version: RoomVersion) -> str:
    """The event's id under ``version``'s format.

    v1/v2: the ``event_id`` the sending server put in the PDU (ValueError when
    there is none); v3: ``$`` and the reference hash in standard unpadded
    base64; v4+: the same in the URL-safe alphabet.
    """
    if version.event_id_in_pdu:
        event_id = pdu.get("event_id")
        if not isinstance(event_id, str):
            raise ValueError("a v1/v2 event carries its event_id")
        return event_id
    return event_id_of_reference(compute_reference_hash(pdu, version), version)


def event_id_of_reference(reference_hash: bytes, version: RoomVersion | None = None) -> str:
    """``$`` + the reference hash in the version's alphabet (URL-safe unless v3)."""
    urlsafe = version is None or version.event_id_urlsafe
    return "$" + encode_base64(reference_hash, urlsafe=urlsafe)


def key_id_of(key: SigningKey | VerifyKey) -> str:
    """The signing key identifier, e.g. ``ed25519:abc``."""
    return f"{key.alg}:{key.version}"


def sign_event(
    pdu: Mapping[str, Any],
    version: RoomVersion,
    server_name: str,
    signing_key: SigningKey,
) -> dict[str, Any]:
    """Return a copy of ``pdu`` signed by ``server_name``.

    The signature covers the redacted form (with the content hash), so it can
    still be checked after the event is redacted. Other servers' signatures
    already on the event are kept.
    """
    return sign_event_with_reference(pdu, version, server_name, signing_key)[1]


def sign_event_with_reference(
    pdu: Mapping[str, Any],
    version: RoomVersion,
    server_name: str,
    signing_key: SigningKey,
    walked: bool = False,
) -> tuple[bytes, dict[str, Any]]:
    """Sign ``pdu`` and return ``(reference_hash, signed_pdu)``.

    The signed bytes and the reference hash's input are the same (the
    redacted event minus signatures and unsigned), so a builder that needs
    both encodes the event once for the two. ``walked``: every value of ``pdu``
    but its signatures passed canonical JSON's walk (see canonical_json).
    """
    # Only events this server built or already validated are signed.
    message = canonical_json(_redacted_for_signing(pdu, version), checked=True, walked=walked)
    signature = encode_base64(signing_key.sign(message).signature)
    # Shallow apart from the signatures being added to: content is shared.
    result = dict(pdu)
    signatures = result.get("signatures")
    signatures = dict(signatures) if isinstance(signatures, dict) else {}
    server_signatures = signatures.get(server_name)
    server_signatures = dict(server_signatures) if isinstance(server_signatures, dict) else {}
    server_signatures[key_id_of(signing_key)] = signature
    signatures[server_name] = server_signatures
    result["signatures"] = signatures
    return hashlib.sha256(message).digest(), result


def verify_event_signature(
    pdu: Mapping[str, Any],
    version: RoomVersion,
    server_name: str,
    verify_key: VerifyKey,
) -> None:
    """Raise SignatureVerifyError unless ``server_name`` signed the event with ``verify_key``.

    Fetching the key (and checking ``valid_until_ts`` against
    ``origin_server_ts``) is the caller's job; this is only the cryptography.
    """
    key_id = key_id_of(verify_key)
    signatures = pdu.get("signatures")
    server_signatures = signatures.get(server_name) if isinstance(signatures, Mapping) else None
    encoded = server_signatures.get(key_id) if isinstance(server_signatures, Mapping) else None
    if not isinstance(encoded, str):
        raise SignatureVerifyError(f"no signature from {server_name} with key {key_id}")
    signature = _decode_unpadded_base64(encoded)
    if signature is None:
        raise SignatureVerifyError(f"signature from {server_name} ({key_id}) is not base64")
    try:
        message = canonical_json(_redacted_for_signing(pdu, version),
                                 checked=not version.strict_canonical_json)
        verify_key.verify(message, signature)
    except (BadSignatureError, CanonicalJSONError, ValueError) as e:
        raise SignatureVerifyError(f"bad signature from {server_name} ({key_id}): {e}") from e


def _decode_unpadded_base64(encoded: str, urlsafe_too: bool = False) -> bytes | None:
    """Strict unpadded base64 decoding; None when malformed.

    Standard alphabet only, unless ``urlsafe_too`` (for identity server keys,
    which have been published in both alphabets).
    """
    if urlsafe_too:
        encoded = encoded.replace("-", "+").replace("_", "/")
    if len(encoded) % 4 == 1:
        return None
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def signed_by_any_public_key(signed: Mapping[str, Any], public_keys: list[str]) -> bool:
    """Whether any ed25519 signature on the JSON object ``signed`` verifies under
    any of the base64 ``public_keys``.

    This is the check for a third-party invite's ``signed`` block (auth rule
    4.4.1.7) against the keys of its m.room.third_party_invite event, where the
    signer's name does not matter, only the key.
    """
    signatures = signed.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    try:
        message = canonical_json(
            {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")}
        )
    except CanonicalJSONError:
        return False
    candidates = [
        signature
        for by_key in signatures.values()
        if isinstance(by_key, Mapping)
        for key_id, signature in by_key.items()
        if key_id.startswith("ed25519:") and isinstance(signature, str)
    ]
    return any(_ed25519_verifies(message, sig, key) for sig in candidates for key in public_keys)


def _ed25519_verifies(message: bytes, signature: str, public_key: str) -> bool:
    key = _decode_unpadded_base64(public_key, urlsafe_too=True)
    raw_signature = _decode_unpadded_base64(signature, urlsafe_too=True)
    if key is None or raw_signature is None or len(key) != 32:
        return False
    try:
        NaclVerifyKey(key).verify(message, raw_signature)
    except (BadSignatureError, ValueError):
        return False
    return True


def server_name_of(identifier: str) -> str:
    """The server part of a user id or pre-v12 room id (after the first colon)."""
    _, _, server = identifier.partition(":")
    return server


def servers_that_must_sign(pdu: Mapping[str, Any], version: RoomVersion) -> set[str]:
    """The servers whose signatures an incoming event must carry.

    * The sender's server, except for an invite made from a third-party invite:
      there the ``signed`` block carries the proof and the event may be relayed
      by another server (spec: "Validating hashes and signatures").
    * In v1/v2, the server named in the ``event_id``.
    * For a restricted join, the server of ``join_authorised_via_users_server``
      (auth rule 4.2.1; 5.2.1 in v12). This is how the pure auth rules get that
      rule enforced: they cannot check signatures themselves. Only joins are
      considered, as the key only means anything there (spec PR #2100).
    """
    servers: set[str] = set()
    content = pdu.get("content")
    if not isinstance(content, Mapping):
        content = {}
    sender = pdu.get("sender")
    is_member = pdu.get("type") == "m.room.member"
    membership = content.get("membership")
    third_party = is_member and membership == "invite" and "third_party_invite" in content
    if isinstance(sender, str) and not third_party:
        servers.add(server_name_of(sender))
    via = content.get("join_authorised_via_users_server")
    if is_member and membership == "join" and version.restricted_join_rule and isinstance(via, str):
        servers.add(server_name_of(via))
    event_id = pdu.get("event_id")
    if version.event_id_in_pdu and isinstance(event_id, str) and ":" in event_id:
        # v1/v2: the server that made the event id signs it too (rooms/v3 auth notes).
        servers.add(server_name_of(event_id))
    return servers
