"""Builds the homeserver explicitly: each part gets exactly what it uses.

This is the only module that knows every package. There is no service
locator: the `Homeserver` record below is used by the root service and by
tests, and never passed down into the parts it holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import threads
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource

from roost.client_api import versions
from roost.client_api.resource import JsonResource, RoostSite, Router
from roost.homeserver.config import RoostConfig
from roost.keys.local import LocalKey, load_or_create_signing_key
from roost.storage.database import Database
from roost.storage.embedded import start_embedded_postgres
from roost.storage.migrations import migrate

logger = logging.getLogger(__name__)


@dataclass
class Homeserver:
    config: RoostConfig
    reactor: Any
    clock: IReactorTime
    db: Database
    local_key: LocalKey
    client_site: RoostSite
    # Things to stop, last started first: (name, zero-argument callable).
    closers: list[tuple[str, Any]] = field(default_factory=list)


async def open_database(config: RoostConfig, reactor: Any, dsn: str | None = None) -> tuple[Database, Any]:
    """Connect to the configured database, or start the embedded one; migrate it."""
    embedded = None
    dsn = dsn or config.database.dsn
    if dsn is None:
        dsn, embedded = await threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), start_embedded_postgres, config.path(config.data_dir)
        )
    db = Database(reactor, dsn, config.database.pool_min, config.database.pool_max)
    await migrate(db)
    return db, embedded


async def build_homeserver(
    config: RoostConfig, reactor: Any, clock: IReactorTime | None = None, dsn: str | None = None
) -> Homeserver:
    """Open storage and build every part; nothing listens yet."""
    clock = clock or reactor
    db, embedded = await open_database(config, reactor, dsn)
    local_key = LocalKey(config.server_name, load_or_create_signing_key(config.signing_key_file))

    router = Router()
    versions.register(router, config.baseurl)
    authenticator = None

    root = Resource()
    api = JsonResource(router, authenticator)
    for name in (b"_matrix", b".well-known", b"health"):
        root.putChild(name, api)
    site = RoostSite(root, config.listeners.client.max_body_bytes)

    hs = Homeserver(config, reactor, clock, db, local_key, site)
    hs.closers.append(("database pool", db.close))
    if embedded is not None:
        hs.closers.append(("embedded PostgreSQL", embedded.cleanup))
    return hs
