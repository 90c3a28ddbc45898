"""Checking the signed key objects clients upload: shape and ed25519 signatures.

Shared by /keys/upload (device keys), /keys/device_signing/upload
(cross-signing keys) and /keys/signatures/upload. Each check raises a
Matrix error naming what is wrong; nothing is stored before every check
has passed.
"""

from __future__ import annotations

from typing import Any

import signedjson.key
import signedjson.sign
from unpaddedbase64 import decode_base64

from roost.client_api.errors import MatrixError

JsonDict = dict[str, Any]


def invalid(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", message)


def verify(obj: JsonDict, signer: str, key_id: str, public_key: str) -> bool:
    """Whether `obj` carries a valid signature by `signer` with the ed25519 `public_key`."""
    try:
        verify_key = signedjson.key.decode_verify_key_bytes(key_id, decode_base64(public_key))
        sig = obj.get("signatures", {}).get(signer, {}).get(key_id)
        if not isinstance(sig, str):
            return False
        signedjson.sign.verify_signed_json(
            {k: v for k, v in obj.items() if k != "signatures"} | {
                "signatures": {signer: {key_id: sig}}}, signer, verify_key)
        return True
    except Exception:
        return False


def check_device_keys(keys: Any, user_id: str, device_id: str) -> JsonDict:
    """A device's identity keys: this user and device, self-signed with its ed25519 key."""
    if not isinstance(keys, dict):
        raise MatrixError(400, "M_BAD_JSON", "device_keys must be an object")
    if keys.get("user_id") != user_id or keys.get("device_id") != device_id:
        raise invalid("device_keys must name the uploading user and device")
    algorithms, key_map = keys.get("algorithms"), keys.get("keys")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise invalid("device_keys.algorithms must be a list of strings")
    if not isinstance(key_map, dict) or not all(isinstance(v, str) for v in key_map.values()):
        raise invalid("device_keys.keys must map key ids to keys")
    ed_id = f"ed25519:{device_id}"
    if ed_id not in key_map:
        raise invalid(f"device_keys.keys must hold {ed_id}")
    if not isinstance(keys.get("signatures"), dict):
        raise invalid("device_keys must be signed")
    if not verify(keys, user_id, ed_id, key_map[ed_id]):
        raise invalid("the device keys' signature does not verify")
    return keys


def check_one_time_keys(keys: Any, field: str) -> dict[str, Any]:
    """{"algorithm:key_id": key} with a string or a signed object for each key."""
    if keys is None:
        return {}
    if not isinstance(keys, dict):
        raise MatrixError(400, "M_BAD_JSON", f"{field} must be an object")
    for key_id, key in keys.items():
        algorithm, sep, name = key_id.partition(":")
        if not sep or not algorithm or not name:
            raise invalid(f"{field}: {key_id!r} is not algorithm:key_id")
        if not isinstance(key, (str, dict)):
            raise invalid(f"{field}: {key_id} must be a key string or object")
        if isinstance(key, dict) and not isinstance(key.get("key"), str):
            raise invalid(f"{field}: {key_id} has no key")
    return keys


def check_fallback_keys(keys: Any) -> dict[str, tuple[str, Any]]:
    """{algorithm: (key_id, key)}: one fallback key per algorithm."""
    checked = check_one_time_keys(keys, "fallback_keys")
    out: dict[str, tuple[str, Any]] = {}
    for key_id, key in checked.items():
        algorithm, _, name = key_id.partition(":")
        if algorithm in out:
            raise invalid(f"fallback_keys: one key per algorithm ({algorithm})")
        out[algorithm] = (name, key)
    return out


def check_cross_signing_key(key: Any, user_id: str, usage: str) -> tuple[str, str]:
    """A cross-signing key of `user_id` for `usage`; its (key id, public key)."""
    if not isinstance(key, dict):
        raise MatrixError(400, "M_BAD_JSON", f"the {usage} key must be an object")
    if key.get("user_id") != user_id:
        raise invalid(f"the {usage} key must belong to {user_id}")
    usages = key.get("usage")
    if not isinstance(usages, list) or usage not in usages:
        raise invalid(f"the {usage} key's usage must include {usage}")
    key_map = key.get("keys")
    if not isinstance(key_map, dict) or len(key_map) != 1:
        raise invalid(f"the {usage} key must hold exactly one key")
    [(key_id, public)] = key_map.items()
    if not isinstance(public, str) or not key_id.startswith("ed25519:") or \
            key_id != f"ed25519:{public}":
        raise invalid(f"the {usage} key's id must be ed25519:<public key>")
    return key_id, public
