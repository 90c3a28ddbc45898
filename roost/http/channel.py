"""The client listener's HTTP/1.1 connection: Twisted's HTTPChannel, storing headers once.

Twisted checks each request header line in the channel (one ":", a valid
name, no NUL/CR/LF in the value, Content-Length and Transfer-Encoding), then
hands it to `Headers.addRawHeader`, which canonicalises the name and splits
the value on line breaks a second time. A request carries five or so headers,
so that second pass was about a twentieth of the CPU of a request that does
little else (bench/http_requests.py). `LeanChannel.headerReceived` makes the
same checks in the same order and stores the checked value directly.

The site builds it inside Twisted's own wrapper (`lean_channel`), as Twisted
builds its HTTPChannel: the wrapper is what the half-closed connections of
roost.http.limits rely on being closed.
"""

from __future__ import annotations

from typing import Any

from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol
from twisted.web.http_headers import InvalidHeaderName, _nameEncoder


class LeanChannel(HTTPChannel):
    def headerReceived(self, line: bytes) -> bool:
        """HTTPChannel.headerReceived (Twisted 26.10), without the second pass."""
        try:
            header, data = line.split(b":", 1)
        except ValueError:
            self._respondToBadRequestAndDisconnect()
            return False
        try:
            header = _nameEncoder.encode(header)
        except InvalidHeaderName:
            self._respondToBadRequestAndDisconnect()
            return False
        data = data.strip(b" \t")
        if len(data.translate(None, b"\x00\r\n")) != len(data):
            self._respondToBadRequestAndDisconnect()
            return False
        if not self._maybeChooseTransferDecoder(header, data):
            return False
        # What Headers.addRawHeader stores, once the name is canonical and the value
        # holds no line break (checked above).
        self.requests[-1].requestHeaders._rawHeaders.setdefault(header, []).append(data)
        self._receivedHeaderCount += 1
        if self._receivedHeaderCount > self.maxHeaders:
            self._respondToBadRequestAndDisconnect()
            return False
        return True


def lean_channel(site: Any) -> Any:
    """A Site's `protocol`: what twisted.web.http._genericHTTPChannelProtocolFactory
    makes, around a LeanChannel."""
    return _GenericHTTPChannelProtocol(LeanChannel())
