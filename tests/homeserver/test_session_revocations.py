"""Revoked tokens across processes (two homeservers on one database and one Redis): each
process serves sessions from its cache, and a revocation in one is refused by the other
as soon as the revoking request has answered, with Redis up or gone."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from roost.storage.session_cache import SessionCache
from tests.homeserver import test_replication_wiring as wiring_tests
from tests.redis_harness import _free_port, _spawn, _stop, _wait_until_up
from tests.server_harness import RunningServer
from tests.storage.test_replication import until

V3 = "/_matrix/client/v3"
_AUTH = {"type": "m.login.password", "password": "hunter2-pw"}


class CrossProcessRevocationTests(TestCase):
    timeout = 120

    async def _cluster(self, redis_port: int | None = None
                       ) -> tuple[RunningServer, RunningServer]:
        return await wiring_tests.TwoProcessTests._cluster(self, redis_port)  # type: ignore[arg-type]

    async def _cached_at(self, server: RunningServer, user: dict[str, Any]) -> SessionCache:
        """Make `server` serve `user`'s token from its cache (its lease held first)."""
        cache = SessionCache.of(server.hs.db)
        await until(cache.trusted, "the process trusts its session cache")
        for _ in range(2):
            whoami = await server.request("GET", V3 + "/account/whoami",
                                          token=user["access_token"])
            self.assertEqual(whoami.status, 200, whoami.body)
        session_id = server.hs.tokens._claims(user["access_token"])["sid"]
        self.assertIsNotNone(cache.get(session_id))
        return cache

    async def _refused(self, server: RunningServer, user: dict[str, Any]) -> None:
        resp = await server.request("GET", V3 + "/account/whoami", token=user["access_token"])
        self.assertEqual((resp.status, resp.body.get("errcode")), (401, "M_UNKNOWN_TOKEN"))

    async def test_a_revocation_in_one_process_is_refused_by_the_others_cache(self) -> None:
        writer, reader = await self._cluster()
        alice = await writer.register("alice")
        await self._cached_at(reader, alice)
        out = await writer.request("POST", V3 + "/logout", {}, token=alice["access_token"])
        self.assertEqual(out.status, 200)
        await self._refused(reader, alice)
        # A device deleted at the reader: refused by the writer, which had it cached.
        login = {**_AUTH, "identifier": {"type": "m.id.user", "user": "alice"}}
        phone = (await reader.request("POST", V3 + "/login", login)).body
        await self._cached_at(writer, phone)
        deleted = await reader.request("DELETE", V3 + f"/devices/{phone['device_id']}",
                                       {"auth": login}, token=phone["access_token"])
        self.assertEqual(deleted.status, 200, deleted.body)
        await self._refused(writer, phone)

    async def test_deactivation_and_the_admin_flag_reach_the_other_process(self) -> None:
        writer, reader = await self._cluster()
        alice = await writer.register("alice")
        await self._cached_at(reader, alice)
        assert writer.hs.admin is not None
        await writer.hs.admin.users.queries.set_admin(alice["user_id"], True)
        self.assertTrue((await reader.hs.tokens.authenticate(alice["access_token"])).is_admin)
        deactivated = await writer.request("POST", V3 + "/account/deactivate", {
            "auth": {**_AUTH, "identifier": {"type": "m.id.user", "user": "alice"}}},
            token=alice["access_token"])
        self.assertEqual(deactivated.status, 200, deactivated.body)
        await self._refused(reader, alice)

    async def test_with_redis_gone_the_processes_read_rows_and_revocations_still_hold(
            self) -> None:
        port, workdir = _free_port(), Path(tempfile.mkdtemp(prefix="roost-redis-"))
        self.addCleanup(shutil.rmtree, workdir, True)
        redis = _spawn(workdir, port, workdir / "redis.log")
        self.addCleanup(_stop, redis)
        self.assertTrue(await _wait_until_up(redis, port))
        writer, reader = await self._cluster(port)
        alice = await writer.register("alice")
        cache = await self._cached_at(reader, alice)
        _stop(redis)
        await until(lambda: not cache.trusted(), "the reader's lease lapses")
        whoami = await reader.request("GET", V3 + "/account/whoami", token=alice["access_token"])
        self.assertEqual(whoami.status, 200, whoami.body)  # read from its row
        self.assertEqual(len(cache), 0)
        out = await writer.request("POST", V3 + "/logout", {}, token=alice["access_token"])
        self.assertEqual(out.status, 200)
        await self._refused(reader, alice)
