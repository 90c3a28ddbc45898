"""Profiles over real HTTP: reading, setting, refusals, and member events kept in step.

The harness below (`start_with_profiles`, also used by test_user_directory
and test_presence) uses the homeserver's own profile and presence parts once
wiring.py exposes them as `Homeserver.profiles` and `Homeserver.presence`.
Until then it builds those parts on the running homeserver's database,
engine and notifier and serves them on a second listener: requests for their
paths go there, every other request to the homeserver itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor
from twisted.internet.interfaces import IReactorTime
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource

from roost.client_api import presence as presence_api
from roost.client_api import profile as profile_api
from roost.client_api import user_directory as directory_api
from roost.client_api.presence import PresenceTracker
from roost.client_api.profile import Profiles
from roost.client_api.resource import JsonResource, RoostSite, Router
from roost.storage.accounts import UserStore
from roost.storage.profiles import ProfileStore
from roost.storage.room_state import RoomStateStore
from roost.storage.streams import StreamIdGenerator
from tests.server_harness import Response, RunningServer, q, start_server

V3 = "/_matrix/client/v3"
SERVER = "test.roost"
_OWN_PATHS = (V3 + "/profile/", V3 + "/user_directory/", V3 + "/presence/")


def uid(name: str) -> str:
    return f"@{name}:{SERVER}"


# A new account's profile: its display name starts as its localpart (the spec).
NEW = {"displayname": "alice"}


@dataclass
class ProfileServer:
    """A running homeserver plus the profile, directory and presence parts."""

    main: RunningServer
    own: RunningServer
    profiles: Profiles
    presence: PresenceTracker
    presence_stream: StreamIdGenerator

    @property
    def hs(self) -> Any:
        return self.main.hs

    async def request(self, method: str, path: str, body: Any = None,
                      token: str | None = None, raw: bytes | None = None) -> Response:
        target = self.own if path.startswith(_OWN_PATHS) else self.main
        return await target.request(method, path, body, token=token, raw=raw)

    async def ok(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        resp = await self.request(method, path, body, token=token)
        assert resp.status == 200, (method, path, resp.status, resp.body)
        return resp.body

    async def user(self, name: str) -> str:
        """Register `name`; returns the access token."""
        return str((await self.main.register(name))["access_token"])

    async def create_room(self, token: str, **body: Any) -> str:
        return str((await self.ok("POST", V3 + "/createRoom", body, token))["room_id"])

    async def join(self, token: str, room_id: str) -> None:
        await self.ok("POST", f"{V3}/rooms/{q(room_id)}/join", {}, token)

    async def leave(self, token: str, room_id: str) -> None:
        await self.ok("POST", f"{V3}/rooms/{q(room_id)}/leave", {}, token)


async def start_with_profiles(testcase: TestCase, clock: IReactorTime | None = None,
                              **presence_timeouts: float) -> ProfileServer:
    main = await start_server(testcase, clock=clock)
    hs = main.hs
    if getattr(hs, "presence", None) is not None and getattr(hs, "profiles", None) is not None:
        # Wired in by wiring.py: use the homeserver's own parts and listener.
        return ProfileServer(main, main, hs.profiles, hs.presence, hs.streams["presence"])
    store = ProfileStore(hs.db)
    profiles = Profiles(store, hs.engine, RoomStateStore(hs.db))
    stream = StreamIdGenerator(0)
    tracker = PresenceTracker(hs.clock, hs.notifier, stream, **presence_timeouts)
    router = Router()
    profile_api.register(router, profiles)
    directory_api.register(router, store)
    presence_api.register(router, tracker, UserStore(hs.db))
    root = Resource()
    root.putChild(b"_matrix", JsonResource(router, hs.tokens))
    port = reactor.listenTCP(0, RoostSite(root, 1024 * 1024), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    own = dataclasses.replace(main, base_url=f"http://127.0.0.1:{port.getHost().port}",
                              port=port, stopped=True)
    return ProfileServer(main, own, profiles, tracker, stream)


def profile_path(user_id: str, field: str = "") -> str:
    return f"{V3}/profile/{q(user_id)}" + (f"/{field}" if field else "")


async def member_content(server: ProfileServer, token: str, room_id: str, user_id: str) -> Any:
    path = f"{V3}/rooms/{q(room_id)}/state/m.room.member/{q(user_id)}"
    return await server.ok("GET", path, token=token)


class ProfileTests(TestCase):
    async def test_new_user_is_named_by_localpart_and_unset_fields_are_not_found(self) -> None:
        server = await start_with_profiles(self)
        await server.user("alice")
        self.assertEqual(await server.ok("GET", profile_path(uid("alice"))), NEW)
        for field in ("avatar_url",):
            resp = await server.request("GET", profile_path(uid("alice"), field))
            self.assertEqual((resp.status, resp.body["errcode"]), (404, "M_NOT_FOUND"))

    async def test_unknown_or_malformed_user_is_refused(self) -> None:
        server = await start_with_profiles(self)
        # A remote user is asked of their server: one that cannot be reached has no profile
        # to give (an IP literal, so the test makes no DNS lookup).
        for user_id in (uid("nobody"), "@someone:127.0.0.1:1"):
            for field in ("", "displayname", "avatar_url"):
                resp = await server.request("GET", profile_path(user_id, field))
                self.assertEqual((resp.status, resp.body["errcode"]), (404, "M_NOT_FOUND"))
        resp = await server.request("GET", profile_path("alice"))
        self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_INVALID_PARAM"))

    async def test_set_and_read_back_displayname_and_avatar_url(self) -> None:
        server = await start_with_profiles(self)
        token = await server.user("alice")
        alice = uid("alice")
        await server.ok("PUT", profile_path(alice, "displayname"), {"displayname": "Alice W"}, token)
        await server.ok("PUT", profile_path(alice, "avatar_url"),
                        {"avatar_url": "mxc://test.roost/abc"}, token)
        self.assertEqual(await server.ok("GET", profile_path(alice, "displayname")),
                         {"displayname": "Alice W"})
        self.assertEqual(await server.ok("GET", profile_path(alice, "avatar_url")),
                         {"avatar_url": "mxc://test.roost/abc"})
        self.assertEqual(await server.ok("GET", profile_path(alice)),
                         {"displayname": "Alice W", "avatar_url": "mxc://test.roost/abc"})

    async def test_null_or_empty_value_removes_the_field(self) -> None:
        server = await start_with_profiles(self)
        token = await server.user("alice")
        path = profile_path(uid("alice"), "displayname")
        for removal in (None, ""):
            await server.ok("PUT", path, {"displayname": "Alice"}, token)
            await server.ok("PUT", path, {"displayname": removal}, token)
            self.assertEqual((await server.request("GET", path)).status, 404)

    async def test_only_the_user_may_change_their_profile(self) -> None:
        server = await start_with_profiles(self)
        await server.user("alice")
        bob = await server.user("bob")
        resp = await server.request("PUT", profile_path(uid("alice"), "displayname"),
                                    {"displayname": "Mallory"}, token=bob)
        self.assertEqual((resp.status, resp.body["errcode"]), (403, "M_FORBIDDEN"))
        resp = await server.request("PUT", profile_path(uid("alice"), "displayname"),
                                    {"displayname": "Mallory"})
        self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_MISSING_TOKEN"))
        self.assertEqual(await server.ok("GET", profile_path(uid("alice"))), NEW)

    async def test_bad_values_are_refused(self) -> None:
        server = await start_with_profiles(self)
        token = await server.user("alice")
        alice = uid("alice")
        cases: list[tuple[str, Any, str]] = [
            ("displayname", {"displayname": 5}, "M_INVALID_PARAM"),
            ("displayname", {"displayname": "x" * 257}, "M_INVALID_PARAM"),
            ("displayname", {}, "M_MISSING_PARAM"),
            ("displayname", ["Alice"], "M_BAD_JSON"),
            ("avatar_url", {"avatar_url": "https://example.com/a.png"}, "M_INVALID_PARAM"),
            ("avatar_url", {"avatar_url": ["mxc://a/b"]}, "M_INVALID_PARAM"),
            ("avatar_url", {"avatar_url": "mxc://a/" + "b" * 1000}, "M_INVALID_PARAM"),
        ]
        for field, body, errcode in cases:
            resp = await server.request("PUT", profile_path(alice, field), body, token=token)
            self.assertEqual((resp.status, resp.body["errcode"]), (400, errcode), body)
        resp = await server.request("PUT", profile_path(alice, "displayname"), raw=b"{nope",
                                    token=token)
        self.assertEqual((resp.status, resp.body["errcode"]), (400, "M_NOT_JSON"))
        self.assertEqual(await server.ok("GET", profile_path(alice)), NEW)

    async def test_change_updates_member_event_in_every_joined_room_only(self) -> None:
        server = await start_with_profiles(self)
        alice = await server.user("alice")
        bob = await server.user("bob")
        joined = [await server.create_room(alice) for _ in range(2)]
        shared = await server.create_room(bob, preset="public_chat")
        await server.join(alice, shared)
        left = await server.create_room(bob, preset="public_chat")
        await server.join(alice, left)
        await server.leave(alice, left)

        await server.ok("PUT", profile_path(uid("alice"), "displayname"), {"displayname": "Al"},
                        alice)
        await server.ok("PUT", profile_path(uid("alice"), "avatar_url"),
                        {"avatar_url": "mxc://test.roost/al"}, alice)
        for room_id in [*joined, shared]:
            self.assertEqual(await member_content(server, bob if room_id == shared else alice,
                                                  room_id, uid("alice")),
                             {"membership": "join", "displayname": "Al",
                              "avatar_url": "mxc://test.roost/al"})
        self.assertEqual(await member_content(server, bob, left, uid("alice")),
                         {"membership": "leave"})

        await server.ok("PUT", profile_path(uid("alice"), "displayname"), {"displayname": None},
                        alice)
        self.assertEqual(await member_content(server, alice, joined[0], uid("alice")),
                         {"membership": "join", "avatar_url": "mxc://test.roost/al"})

    async def test_member_profile_gives_the_fields_for_a_join_event(self) -> None:
        server = await start_with_profiles(self)
        token = await server.user("alice")
        self.assertEqual(await server.profiles.member_profile(uid("alice")), NEW)
        self.assertEqual(await server.profiles.member_profile(uid("nobody")), {})
        await server.ok("PUT", profile_path(uid("alice"), "displayname"), {"displayname": "A"},
                        token)
        self.assertEqual(await server.profiles.member_profile(uid("alice")), {"displayname": "A"})

    async def test_deactivation_hook_clears_the_profile(self) -> None:
        server = await start_with_profiles(self)
        token = await server.user("alice")
        await server.ok("PUT", profile_path(uid("alice"), "displayname"), {"displayname": "A"},
                        token)
        await server.profiles.on_deactivate(uid("alice"))
        self.assertEqual(await server.ok("GET", profile_path(uid("alice"))), {})


class ProfileFieldTests(TestCase):
    async def test_custom_fields_and_tz_are_set_read_listed_and_deleted(self) -> None:
        server = await start_with_profiles(self)
        token = await server.user("alice")
        me = uid("alice")
        await server.ok("PUT", profile_path(me, "m.tz"), {"m.tz": "Europe/London"}, token)
        job = {"title": "Keeper", "since": 2020}
        await server.ok("PUT", profile_path(me, "org.example.job"), {"org.example.job": job},
                        token)
        self.assertEqual(await server.ok("GET", profile_path(me, "org.example.job")),
                         {"org.example.job": job})
        self.assertEqual(await server.ok("GET", profile_path(me)),
                         {**NEW, "m.tz": "Europe/London", "org.example.job": job})
        await server.ok("DELETE", profile_path(me, "org.example.job"), None, token)
        await server.ok("DELETE", profile_path(me, "org.example.never"), None, token)
        gone = await server.request("GET", profile_path(me, "org.example.job"))
        self.assertEqual((gone.status, gone.body["errcode"]), (404, "M_NOT_FOUND"))
        await server.ok("DELETE", profile_path(me, "displayname"), None, token)
        self.assertEqual(await server.ok("GET", profile_path(me)), {"m.tz": "Europe/London"})

    async def test_bad_field_requests_are_refused_and_change_nothing(self) -> None:
        server = await start_with_profiles(self)
        token = await server.user("alice")
        await server.user("bob")
        me = uid("alice")
        cases = [
            ("PUT", "Bad.Key", {"Bad.Key": 1}, token, 400, "M_INVALID_PARAM"),
            ("PUT", "nodots", {"nodots": 1}, token, 400, "M_INVALID_PARAM"),
            ("PUT", "org.example." + "k" * 260, {}, token, 400, "M_KEY_TOO_LARGE"),
            ("PUT", "m.tz", {"m.tz": 5}, token, 400, "M_INVALID_PARAM"),
            ("PUT", "org.example.a", {}, token, 400, "M_MISSING_PARAM"),
            ("PUT", "org.example.a", {"org.example.a": 1, "other": 2}, token, 400, "M_BAD_JSON"),
            ("PUT", "org.example.big", {"org.example.big": "x" * 70_000}, token, 400,
             "M_PROFILE_TOO_LARGE"),
            ("DELETE", "Bad.Key", None, token, 400, "M_INVALID_PARAM"),
            ("PUT", "org.example.a", {"org.example.a": 1}, None, 401, "M_MISSING_TOKEN"),
        ]
        for method, key, body, who, status, errcode in cases:
            resp = await server.request(method, profile_path(me, key), body, token=who)
            self.assertEqual((resp.status, resp.body["errcode"]), (status, errcode), key)
        bob_token = await server.user("carol")
        resp = await server.request("PUT", profile_path(me, "org.example.a"),
                                    {"org.example.a": 1}, token=bob_token)
        self.assertEqual((resp.status, resp.body["errcode"]), (403, "M_FORBIDDEN"))
        resp = await server.request("DELETE", profile_path(me, "displayname"), token=bob_token)
        self.assertEqual((resp.status, resp.body["errcode"]), (403, "M_FORBIDDEN"))
        self.assertEqual(await server.ok("GET", profile_path(me)), NEW)
