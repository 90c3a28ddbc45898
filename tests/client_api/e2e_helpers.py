"""Real ed25519 device and cross-signing keys for end-to-end tests, signed with signedjson."""

from __future__ import annotations

from typing import Any

import signedjson.key
import signedjson.sign
from nacl.signing import SigningKey
from unpaddedbase64 import encode_base64

V3 = "/_matrix/client/v3"


class Signer:
    """An ed25519 key pair that signs JSON as `user_id` with key id `key_id`."""

    def __init__(self, user_id: str, key_name: str | None = None) -> None:
        self.user_id = user_id
        self.key = SigningKey.generate()
        self.public = encode_base64(self.key.verify_key.encode())
        self.key_id = f"ed25519:{key_name if key_name is not None else self.public}"
        self.key.alg = "ed25519"
        self.key.version = self.key_id.split(":", 1)[1]

    def sign(self, obj: dict[str, Any]) -> dict[str, Any]:
        return signedjson.sign.sign_json(dict(obj), self.user_id, self.key)


def device_keys(user_id: str, device_id: str) -> tuple[dict[str, Any], Signer]:
    signer = Signer(user_id, device_id)
    curve = encode_base64(SigningKey.generate().verify_key.encode())
    keys = {"user_id": user_id, "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"ed25519:{device_id}": signer.public, f"curve25519:{device_id}": curve}}
    return signer.sign(keys), signer


def one_time_keys(signer: Signer, count: int, prefix: str = "k") -> dict[str, Any]:
    return {f"signed_curve25519:{prefix}{i}": signer.sign({"key": f"{prefix}key{i}"})
            for i in range(count)}


def cross_signing_key(user_id: str, usage: str, master: Signer | None = None
                      ) -> tuple[dict[str, Any], Signer]:
    signer = Signer(user_id)
    key = {"user_id": user_id, "usage": [usage], "keys": {signer.key_id: signer.public}}
    if master is not None:
        key = master.sign(key)
    return key, signer


def verify_signature(obj: dict[str, Any], signer: Signer) -> None:
    verify_key = signedjson.key.decode_verify_key_bytes(signer.key_id,
                                                        signer.key.verify_key.encode())
    signedjson.sign.verify_signed_json(obj, signer.user_id, verify_key)
