"""Application services: registration files, acting as their users, exclusive
namespaces, the ping, and the durable, ordered transaction queue."""

from __future__ import annotations

import json
import os

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from roost.appservice.registration import RegistrationError, parse_registration
from tests.appservice.test_mautrix import free_port, write_registration
from tests.server_harness import q, start_server

V3 = "/_matrix/client/v3"
AS_TOKEN = "as-token-bridge"


class RecordingService(resource.Resource):
    """An application service on loopback: records transactions; can refuse them."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.transactions: list[tuple[str, list[dict]]] = []
        self.refuse = False
        self.auth: list[str] = []
        self.queries: list[str] = []
        self.ephemeral: list[dict] = []
        self.known: set[str] = set()
        self.on_query = None

    def render_PUT(self, request: server.Request) -> bytes:
        self.auth.append(request.getHeader("Authorization") or "")
        if self.refuse:
            request.setResponseCode(503)
            return b"{}"
        txn_id = request.path.decode().rsplit("/", 1)[1]
        body = json.loads(request.content.read())
        if body["events"]:
            self.transactions.append((txn_id, body["events"]))
        self.ephemeral.extend(body.get("ephemeral", []))
        return b"{}"

    def render_POST(self, request: server.Request) -> bytes:  # the ping
        return b"{}"

    def render_GET(self, request: server.Request) -> bytes:
        """User and alias queries: answered 200 only for names in `known`."""
        self.queries.append(request.path.decode())
        name = request.path.decode().rsplit("/", 1)[1]
        from urllib.parse import unquote

        if unquote(name) in self.known:
            if self.on_query is None:
                return b"{}"
            # Answer only once the service has made the thing asked for, as bridges do.
            done = defer.ensureDeferred(self.on_query(unquote(name)))
            done.addBoth(lambda _r: (request.write(b"{}"), request.finish()))
            return server.NOT_DONE_YET
        request.setResponseCode(404)
        return b'{"errcode": "M_NOT_FOUND"}'

    def bodies(self) -> list[str]:
        return [e["content"].get("body") for _t, evs in self.transactions for e in evs
                if e["type"] == "m.room.message"]


async def wait_until(check, what: str) -> None:
    for _ in range(300):
        if check():
            return
        await task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


class RegistrationFileTests(TestCase):
    def test_a_registration_with_a_bad_regex_or_missing_token_is_refused(self) -> None:
        good = {"id": "x", "url": None, "as_token": "a", "hs_token": "h",
                "sender_localpart": "xbot", "namespaces": {"users": [{"regex": "@x_.*"}]}}
        service = parse_registration("x.yaml", good, "hs")
        self.assertEqual(service.sender, "@xbot:hs")
        self.assertTrue(service.owns_user("@x_1:hs"))
        self.assertFalse(service.exclusive_user("@x_1:hs"))
        with self.assertRaisesRegex(RegistrationError, "regex"):
            parse_registration("x.yaml", {**good, "namespaces": {"users": [{"regex": "("}]}}, "hs")
        with self.assertRaisesRegex(RegistrationError, "as_token"):
            parse_registration("x.yaml", {**good, "as_token": ""}, "hs")


class AppServiceClientTests(TestCase):
    async def _server(self, port: int | None = None):
        return await start_server(self, app_service_config_files=[
            registration_file(self, port or free_port())])

    async def test_exclusive_users_and_aliases_are_closed_to_everyone_else(self) -> None:
        server = await self._server()
        taken = await server.request("POST", V3 + "/register", {
            "username": "bridge_mallory", "password": "pw-mallory",
            "auth": {"type": "m.login.dummy"}})
        self.assertEqual((taken.status, taken.body["errcode"]), (400, "M_EXCLUSIVE"))
        outside = await server.request("POST", V3 + "/register", {
            "type": "m.login.application_service", "username": "carol"},
            headers={"Authorization": f"Bearer {AS_TOKEN}"})
        self.assertEqual((outside.status, outside.body["errcode"]), (400, "M_EXCLUSIVE"))
        no_token = await server.request("POST", V3 + "/register", {
            "type": "m.login.application_service", "username": "bridge_x"})
        self.assertEqual(no_token.status, 401)
        bob = await server.register("bob")
        room = (await server.request("POST", V3 + "/createRoom", {},
                                     token=bob["access_token"])).body["room_id"]
        alias = await server.request("PUT", f"{V3}/directory/room/{q('#bridge_x:test.roost')}",
                                     {"room_id": room}, token=bob["access_token"])
        self.assertEqual((alias.status, alias.body["errcode"]), (400, "M_EXCLUSIVE"))

    async def test_masquerading_only_as_registered_users_in_the_namespace(self) -> None:
        server = await self._server()
        who = await server.request("GET", V3 + "/account/whoami", token=AS_TOKEN)
        self.assertEqual(who.body["user_id"], "@bridgebot:test.roost")
        unknown = await server.request(
            "GET", f"{V3}/account/whoami?user_id={q('@bridge_alice:test.roost')}", token=AS_TOKEN)
        self.assertEqual((unknown.status, unknown.body["errcode"]), (403, "M_FORBIDDEN"))
        made = await server.request("POST", V3 + "/register", {
            "type": "m.login.application_service", "username": "bridge_alice",
            "inhibit_login": True}, headers={"Authorization": f"Bearer {AS_TOKEN}"})
        self.assertEqual(made.body, {"user_id": "@bridge_alice:test.roost"})
        who = await server.request(
            "GET", f"{V3}/account/whoami?user_id={q('@bridge_alice:test.roost')}", token=AS_TOKEN)
        self.assertEqual(who.body["user_id"], "@bridge_alice:test.roost")
        # The argument's name escaped (the query is parsed only when it may hold it).
        who = await server.request(
            "GET", f"{V3}/account/whoami?user%5Fid={q('@bridge_alice:test.roost')}", token=AS_TOKEN)
        self.assertEqual(who.body["user_id"], "@bridge_alice:test.roost")
        await server.register("bob")
        outside = await server.request(
            "GET", f"{V3}/account/whoami?user_id={q('@bob:test.roost')}", token=AS_TOKEN)
        self.assertEqual(outside.status, 403)

    async def test_ping_reaches_the_service_and_reports_failures(self) -> None:
        port = free_port()
        server = await self._server(port)
        path = "/_matrix/client/v1/appservice/bridge/ping"
        down = await server.request("POST", path, {"transaction_id": "t"}, token=AS_TOKEN)
        self.assertEqual((down.status, down.body["errcode"]), (502, "M_CONNECTION_FAILED"))
        serve_service(self, port)
        up = await server.request("POST", path, {"transaction_id": "t"}, token=AS_TOKEN)
        self.assertEqual(up.status, 200, up.body)
        self.assertIsInstance(up.body["duration_ms"], int)
        bob = await server.register("bob")
        other = await server.request("POST", path, {}, token=bob["access_token"])
        self.assertEqual((other.status, other.body["errcode"]), (403, "M_FORBIDDEN"))


def server_factory(root: resource.Resource) -> server.Site:
    site = server.Site(root)
    site.noisy = False
    return site


def registration_file(testcase: TestCase, port: int, **options: bool) -> str:
    """A registration for the bridge at `port`, in a folder of the test's own."""
    folder = os.path.abspath(testcase.mktemp())
    os.makedirs(folder)
    return write_registration(folder, port, **options)


def serve_service(testcase: TestCase, port: int) -> RecordingService:
    """A RecordingService listening on `port` for the rest of the test."""
    service = RecordingService()
    listening = reactor.listenTCP(port, server_factory(service), interface="127.0.0.1")
    testcase.addCleanup(listening.stopListening)
    return service


class TransactionQueueTests(TestCase):
    async def test_events_reach_the_service_in_order_and_survive_a_restart(self) -> None:
        port = free_port()
        registration = registration_file(self, port)
        service = RecordingService()
        listening = reactor.listenTCP(port, server_factory(service), interface="127.0.0.1")
        self.addCleanup(lambda: listening.stopListening() if listening.connected else None)
        data_dir = os.path.abspath(self.mktemp())
        first = await start_server(self, data_dir=data_dir,
                                   app_service_config_files=[registration])
        bob = await first.register("bob")
        room = (await first.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                    token=bob["access_token"])).body["room_id"]
        await first.request("POST", f"{V3}/join/{q(room)}", {}, token=AS_TOKEN)  # the bot joins
        await first.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/1",
                            {"msgtype": "m.text", "body": "one"}, token=bob["access_token"])
        await wait_until(lambda: "one" in service.bodies(), "the first message")
        self.assertTrue(all(a == "Bearer hs-token-bridge" for a in service.auth))
        service.refuse = True  # the bridge goes down: transactions wait
        for n in ("two", "three"):
            await first.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/{n}",
                                {"msgtype": "m.text", "body": n}, token=bob["access_token"])
        await wait_until(lambda: len(service.auth) >= 2, "a refused attempt")
        await first.stop()
        service.refuse = False
        await start_server(self, dsn=first.hs.db.dsn, data_dir=data_dir,
                           app_service_config_files=[registration])
        await wait_until(lambda: service.bodies()[-1:] == ["three"], "the queued messages")
        self.assertEqual(service.bodies(), ["one", "two", "three"])
        txn_ids = [int(t) for t, _e in service.transactions]
        self.assertEqual(txn_ids, sorted(set(txn_ids)))  # in order, none twice
        in_room = [e["room_id"] for _t, evs in service.transactions for e in evs]
        self.assertEqual(set(in_room), {room})


class AppServiceExtrasTests(TestCase):
    async def _server_and_service(self):
        port = free_port()
        service = serve_service(self, port)
        server = await start_server(self, app_service_config_files=[
            registration_file(self, port)],
            rate_limits={"message": {"per_second": 0.001, "burst": 1}})
        return server, service

    async def test_login_as_a_namespace_user_and_not_rate_limited(self) -> None:
        server, _service = await self._server_and_service()
        await server.request("POST", V3 + "/register", {
            "type": "m.login.application_service", "username": "bridge_alice",
            "inhibit_login": True}, headers={"Authorization": f"Bearer {AS_TOKEN}"})
        flows = await server.request("GET", V3 + "/login")
        self.assertIn({"type": "m.login.application_service"}, flows.body["flows"])
        login = await server.request("POST", V3 + "/login", {
            "type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": "bridge_alice"}},
            headers={"Authorization": f"Bearer {AS_TOKEN}"})
        self.assertEqual(login.status, 200, login.body)
        who = await server.request("GET", V3 + "/account/whoami",
                                   token=login.body["access_token"])
        self.assertEqual(who.body["user_id"], "@bridge_alice:test.roost")
        # The argument's name escaped (the query is parsed only when it may hold it).
        who = await server.request(
            "GET", f"{V3}/account/whoami?user%5Fid={q('@bridge_alice:test.roost')}", token=AS_TOKEN)
        self.assertEqual(who.body["user_id"], "@bridge_alice:test.roost")
        await server.register("bob")
        outside = await server.request("POST", V3 + "/login", {
            "type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": "bob"}},
            headers={"Authorization": f"Bearer {AS_TOKEN}"})
        self.assertEqual(outside.status, 403)
        # rate_limited: false in the registration: the bot sends past the message limit.
        room = (await server.request("POST", V3 + "/createRoom", {},
                                     token=AS_TOKEN)).body["room_id"]
        for n in range(3):
            sent = await server.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/{n}",
                                        {"msgtype": "m.text", "body": "x"}, token=AS_TOKEN)
            self.assertEqual(sent.status, 200, sent.body)

    async def test_unknown_aliases_and_users_in_the_namespace_are_asked_of_the_service(
            self) -> None:
        server, service = await self._server_and_service()
        alias = "#bridge_lobby:test.roost"
        missing = await server.request("GET", f"{V3}/directory/room/{q(alias)}")
        self.assertEqual(missing.status, 404)
        self.assertEqual(len(service.queries), 1)
        room = (await server.request("POST", V3 + "/createRoom", {},
                                     token=AS_TOKEN)).body["room_id"]
        service.known.add(alias)

        async def create_alias(name: str) -> None:
            made = await server.request("PUT", f"{V3}/directory/room/{q(name)}",
                                        {"room_id": room}, token=AS_TOKEN)
            assert made.status == 200, made.body

        service.on_query = create_alias
        found = await server.request("GET", f"{V3}/directory/room/{q(alias)}")
        self.assertEqual(found.body.get("room_id"), room, found.body)
        outside = await server.request("GET", f"{V3}/directory/room/{q('#other:test.roost')}")
        self.assertEqual(outside.status, 404)
        self.assertEqual(len([p for p in service.queries if "rooms" in p]), 2)
        profile = await server.request("GET", f"{V3}/profile/{q('@bridge_bob:test.roost')}")
        self.assertEqual(profile.status, 404)
        self.assertTrue(any("users" in p for p in service.queries))


class EphemeralTests(TestCase):
    async def test_typing_and_receipts_reach_a_service_that_asked_for_them(self) -> None:
        port = free_port()
        service = serve_service(self, port)
        server = await start_server(self, app_service_config_files=[
            registration_file(self, port, receive_ephemeral=True)])
        bob = await server.register("bob")
        room = (await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                     token=bob["access_token"])).body["room_id"]
        other = (await server.request("POST", V3 + "/createRoom", {},
                                      token=bob["access_token"])).body["room_id"]
        await server.request("POST", f"{V3}/join/{q(room)}", {}, token=AS_TOKEN)
        await server.request("PUT", f"{V3}/rooms/{q(other)}/typing/{q('@bob:test.roost')}",
                             {"typing": True, "timeout": 30000}, token=bob["access_token"])
        await server.request("PUT", f"{V3}/rooms/{q(room)}/typing/{q('@bob:test.roost')}",
                             {"typing": True, "timeout": 30000}, token=bob["access_token"])
        await wait_until(lambda: any(e["type"] == "m.typing" for e in service.ephemeral),
                         "a typing notice")
        typing = [e for e in service.ephemeral if e["type"] == "m.typing"]
        self.assertEqual(typing[0], {"type": "m.typing", "room_id": room,
                                     "content": {"user_ids": ["@bob:test.roost"]}})
        self.assertNotIn(other, [e["room_id"] for e in service.ephemeral])  # not its room
        sent = await server.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/r1",
                                    {"msgtype": "m.text", "body": "x"}, token=AS_TOKEN)
        event_id = sent.body["event_id"]
        await server.request("POST", f"{V3}/rooms/{q(room)}/receipt/m.read/{q(event_id)}", {},
                             token=bob["access_token"])
        await wait_until(lambda: any(e["type"] == "m.receipt" for e in service.ephemeral),
                         "a receipt")
        receipt = [e for e in service.ephemeral if e["type"] == "m.receipt"][0]
        self.assertEqual(receipt["room_id"], room)
        self.assertIn("@bob:test.roost", receipt["content"][event_id]["m.read"])
