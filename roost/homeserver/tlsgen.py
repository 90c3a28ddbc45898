"""A self-signed certificate for trying federation out (`generate-config --tls`)."""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def write_self_signed(config_dir: str, data_dir: str, server_name: str) -> tuple[str, str]:
    """Write `<data_dir>/tls.crt` and `tls.key`; return their config-relative paths."""
    host = server_name.rsplit(":", 1)[0] if not server_name.endswith("]") else server_name
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    target = os.path.join(config_dir, data_dir)
    os.makedirs(target, exist_ok=True)
    cert_rel, key_rel = f"{data_dir}/tls.crt", f"{data_dir}/tls.key"
    with open(os.path.join(config_dir, cert_rel), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(os.path.join(config_dir, key_rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_rel, key_rel
