"""The third-party lookups, answered by an application service on loopback."""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qsl

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from tests.server_harness import start_server

V3 = "/_matrix/client/v3"
PROTOCOL = {"user_fields": ["network", "nickname"], "location_fields": ["network", "channel"],
            "icon": "mxc://example.org/irc", "field_types": {}, "instances": [
                {"desc": "Libera", "network_id": "libera", "fields": {"network": "libera"}}]}


class IrcBridge(resource.Resource):
    """Answers /_matrix/app/v1/thirdparty/... for the protocol "irc"."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, dict[str, str]]] = []

    def render_GET(self, request: server.Request) -> bytes:
        path = request.path.decode()
        query = dict(parse_qsl(request.uri.decode().partition("?")[2]))
        self.asked.append((path, query))
        answers = {
            "/_matrix/app/v1/thirdparty/protocol/irc": PROTOCOL,
            "/_matrix/app/v1/thirdparty/location/irc": [
                {"alias": "#irc_libera_#matrix:test.roost", "protocol": "irc",
                 "fields": query}] if query.get("channel") == "#matrix" else [],
            "/_matrix/app/v1/thirdparty/user": [
                {"userid": query.get("userid"), "protocol": "irc",
                 "fields": {"nickname": "alice"}}],
        }
        if path not in answers:
            request.setResponseCode(404)
            return b'{"errcode": "M_NOT_FOUND"}'
        return json.dumps(answers[path]).encode()


class ThirdPartyTests(TestCase):
    async def _server(self):  # noqa: ANN202
        bridge = IrcBridge()
        site = server.Site(bridge)
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "irc.yaml")
        with open(path, "w") as f:
            json.dump({"id": "irc", "url": f"http://127.0.0.1:{port.getHost().port}",
                       "as_token": "as-irc", "hs_token": "hs-irc", "sender_localpart": "ircbot",
                       "protocols": ["irc"], "rate_limited": False,
                       "namespaces": {"users": [{"exclusive": True, "regex": "@irc_.*"}],
                                      "aliases": [], "rooms": []}}, f)
        srv = await start_server(self, app_service_config_files=[path])
        token = (await srv.register("alice"))["access_token"]
        return srv, token, bridge

    async def test_protocols_and_lookups_come_from_the_bridge(self) -> None:
        srv, token, bridge = await self._server()
        protocols = await srv.request("GET", V3 + "/thirdparty/protocols", token=token)
        self.assertEqual((protocols.status, protocols.body), (200, {"irc": PROTOCOL}))
        one = await srv.request("GET", V3 + "/thirdparty/protocol/irc", token=token)
        self.assertEqual(one.body, PROTOCOL)
        found = await srv.request(
            "GET", V3 + "/thirdparty/location/irc?network=libera&channel=%23matrix", token=token)
        self.assertEqual(found.status, 200, found.body)
        self.assertEqual([f["alias"] for f in found.body], ["#irc_libera_#matrix:test.roost"])
        self.assertEqual(bridge.asked[-1], ("/_matrix/app/v1/thirdparty/location/irc",
                                            {"network": "libera", "channel": "#matrix"}))
        user = await srv.request("GET", V3 + "/thirdparty/user?userid=%40irc_alice%3Atest.roost",
                                 token=token)
        self.assertEqual(user.body[0]["fields"], {"nickname": "alice"})

    async def test_unknown_protocols_and_empty_searches_are_not_found(self) -> None:
        srv, token, _bridge = await self._server()
        for path in ("/thirdparty/protocol/xmpp", "/thirdparty/location/xmpp?x=1",
                     "/thirdparty/user/xmpp", "/thirdparty/location/irc?channel=%23nothing",
                     "/thirdparty/location?alias=%23nope%3Atest.roost"):
            resp = await srv.request("GET", V3 + path, token=token)
            self.assertEqual((resp.status, resp.body["errcode"]), (404, "M_NOT_FOUND"), path)
        missing = await srv.request("GET", V3 + "/thirdparty/user", token=token)
        self.assertEqual((missing.status, missing.body["errcode"]), (400, "M_MISSING_PARAM"))
        no_token = await srv.request("GET", V3 + "/thirdparty/protocols")
        self.assertEqual(no_token.status, 401)

    async def test_no_bridges_no_protocols(self) -> None:
        srv = await start_server(self)
        token = (await srv.register("alice"))["access_token"]
        resp = await srv.request("GET", V3 + "/thirdparty/protocols", token=token)
        self.assertEqual((resp.status, resp.body), (200, {}))
