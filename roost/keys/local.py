"""This server's signing key: made at first start, kept in Synapse's key-file format.

The file holds one line, `ed25519 <version> <unpadded base64 seed>`, the format
Synapse reads and writes, so an operator can move a key between servers.
"""

from __future__ import annotations

import os
import secrets
import string
from typing import Any

import signedjson.key
import signedjson.sign
from nacl.signing import SigningKey


def generate_key_version() -> str:
    alphabet = string.ascii_letters + string.digits
    return "a_" + "".join(secrets.choice(alphabet) for _ in range(4))


def load_or_create_signing_key(path: str) -> SigningKey:
    """Read the first key in `path`, writing a new one there if the file is absent."""
    if not os.path.exists(path):
        key = signedjson.key.generate_signing_key(generate_key_version())
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # Written whole under another name, then linked into place: several processes
        # starting at once (worker roles) all end up with the one key that won.
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            signedjson.key.write_signing_keys(f, [key])
        try:
            os.link(tmp, path)
            return key
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    with open(path) as f:
        keys = signedjson.key.read_signing_keys(f)
    if not keys:
        raise ValueError(f"no signing key in {path}")
    return keys[0]


def key_id(key: SigningKey) -> str:
    return f"{key.alg}:{key.version}"


class LocalKey:
    """This server's name and key, and the one way to sign JSON with them."""

    def __init__(self, server_name: str, signing_key: SigningKey) -> None:
        self.server_name = server_name
        self.signing_key = signing_key
        self.key_id = key_id(signing_key)

    def sign_json(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Add this server's signature to `obj` in place, and return it."""
        return signedjson.sign.sign_json(obj, self.server_name, self.signing_key)

    @property
    def verify_key_base64(self) -> str:
        return signedjson.key.encode_verify_key_base64(self.signing_key.verify_key)
