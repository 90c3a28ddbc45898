"""Client TLS for federation: certificates checked against the name discovery chose
(or, for tests on loopback only, not checked at all)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet._sslverify import ClientTLSOptions, IOpenSSLTrustRoot
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

logger = logging.getLogger(__name__)


@implementer(IOpenSSLTrustRoot)
class _PlatformAndExtraTrust:
    """The operating system's authorities plus those of a PEM file."""

    def __init__(self, certs: Sequence[ssl.Certificate]) -> None:
        self._certs = [c.original for c in certs]

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.set_default_verify_paths()
        store = context.get_cert_store()
        for cert in self._certs:
            store.add_cert(cert)


def _load_pem_certs(path: str) -> list[ssl.Certificate]:
    with open(path, "rb") as f:
        data = f.read()
    marker = b"-----END CERTIFICATE-----"
    blocks = [b + marker for b in data.split(marker) if b"-----BEGIN CERTIFICATE-----" in b]
    if not blocks:
        raise ValueError(f"no certificate in {path}")
    return [ssl.Certificate.loadPEM(b.strip()) for b in blocks]


@implementer(IOpenSSLClientConnectionCreator)
class _UncheckedTls:
    """TLS without certificate checks (tests only), still sending SNI."""

    def __init__(self, options: ssl.CertificateOptions, name: str) -> None:
        self._options = options
        self._sni = None if is_ip(name) else name.encode("idna")

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(tls_protocol)
        if self._sni:
            connection.set_tlsext_host_name(self._sni)
        return connection


_unchecked_warned: list[bool] = []  # warn once per process, not per client


@implementer(IPolicyForHTTPS)
class TlsPolicy:
    """Client TLS for federation: certificates checked against the expected name.

    One OpenSSL context is shared by every connection (building one loads the
    system trust store); each connection gets its own name to check.
    """

    def __init__(self, verify: bool = True, ca_file: str | None = None) -> None:
        self._verify = verify
        if verify:
            trust = _PlatformAndExtraTrust(_load_pem_certs(ca_file)) if ca_file else ssl.platformTrust()
            self._options = ssl.CertificateOptions(trustRoot=trust)
        else:
            if not _unchecked_warned:
                _unchecked_warned.append(True)
                logger.warning("federation TLS certificates are NOT checked: for tests only")
            self._options = ssl.CertificateOptions(verify=False)

    def creator(self, name: str) -> IOpenSSLClientConnectionCreator:
        if not self._verify:
            return _UncheckedTls(self._options, name)
        return ClientTLSOptions(self._options.clientConnectionForTLS, name)

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return self.creator(hostname.decode("ascii"))


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
