"""roost.http.reactor.LeanEPollReactor: Twisted's epoll reactor without a log context per
socket read. Run in a child process (the test process has its reactor installed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = r'''
import json, sys
from roost.http.reactor import LeanEPollReactor, install
assert install()
assert not install()  # a second install finds the reactor there
from twisted.internet import reactor, protocol
from twisted.python import log
errors = []
log.addObserver(lambda e: e.get("isError") and errors.append(e))

class Echo(protocol.Protocol):
    def dataReceived(self, data):
        if data == b"boom":
            raise ValueError("boom")
        self.transport.write(data)

class Client(protocol.Protocol):
    def connectionMade(self):
        self.got = b""
        self.transport.write(self.factory.payload)
    def dataReceived(self, data):
        self.got += data
        if self.got == self.factory.payload:
            self.factory.results.append("echo")
            self.transport.loseConnection()
    def connectionLost(self, reason):
        if self.got != self.factory.payload:
            self.factory.results.append("closed")
        if len(self.factory.results) == self.factory.expected:
            stop()

def stop():
    if reactor.running and not stopping:
        stopping.append(True)
        reactor.stop()

stopping = []
server = protocol.ServerFactory.forProtocol(Echo)
port = reactor.listenTCP(0, server, interface="127.0.0.1")
client = protocol.ClientFactory.forProtocol(Client)
client.results, client.expected = [], 51
bad = protocol.ClientFactory.forProtocol(Client)
bad.results, bad.expected, bad.payload = client.results, 51, b"boom"
client.payload = b"hello"
for _ in range(25):
    reactor.connectTCP("127.0.0.1", port.getHost().port, client)
reactor.connectTCP("127.0.0.1", port.getHost().port, bad)
for _ in range(25):
    reactor.connectTCP("127.0.0.1", port.getHost().port, client)
reactor.callLater(20, stop)
reactor.run()
print(json.dumps({"reactor": type(reactor).__name__, "results": sorted(client.results),
                  "errors": [str(e.get("failure").value) for e in errors if e.get("failure")]}))
'''


class LeanReactorTests(TestCase):
    def test_reads_writes_and_a_failing_protocol(self) -> None:
        env = {**os.environ, "PYTHONPATH": REPO}
        out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, env=env,
                             timeout=60, check=True).stdout
        found = json.loads(out.decode().strip().splitlines()[-1])
        self.assertEqual(found["reactor"], "LeanEPollReactor")
        # 50 echoes; the connection whose protocol raised was closed, the others served.
        self.assertEqual(found["results"], ["closed"] + ["echo"] * 50)
        self.assertEqual(found["errors"], ["boom"])
