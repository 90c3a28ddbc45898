"""Wiring for the client API's smaller areas: tags, third-party identifiers, OpenID,
TURN, the support well-known, guests leaving rooms closed to them, reports, timestamp_to_event, search (with its indexer) and the deprecated
/events and /initialSync.

Split from wiring.py, which builds the core and calls this; like wiring, this
module knows every package and passes each part exactly what it uses.
"""

from __future__ import annotations

import functools
from typing import Any

from twisted.internet.interfaces import IReactorTime

from roost.client_api import (
    account_data,
    deprecated,
    openid,
    reports,
    search,
    support,
    sync,
    tags,
    threepid,
    timestamps,
)
from roost.client_api import voip as voip_api
from roost.client_api.guest_access import GuestAccessWatcher
from roost.client_api.presence import PresenceTracker
from roost.client_api.resource import Router
from roost.client_api.room_view import RoomView
from roost.client_api.search_index import SearchIndexer
from roost.federation import openid as federation_openid
from roost.federation import timestamps as federation_timestamps
from roost.federation.transport.client import FederationClient
from roost.federation.transport.server import FederationRouter
from roost.homeserver.config import RoostConfig
from roost.rooms.engine import RoomEngine
from roost.storage.database import Database
from roost.storage.directory import DirectoryStore
from roost.storage.event_timestamps import EventTimestampStore
from roost.storage.events import SyncEventStore
from roost.storage.guests import GuestQueries
from roost.storage.notifier import Notifier
from roost.storage.openid import OpenIdStore
from roost.storage.reports import ReportStore
from roost.storage.room_pages import RoomPageStore
from roost.storage.search import SearchStore
from roost.storage.streams import StreamIdGenerator
from roost.storage.sync_data import AccountDataStore


def register_client_extras(router: Router, db: Database, clock: IReactorTime,
                           notifier: Notifier, engine: RoomEngine,
                           streams: dict[str, StreamIdGenerator], config: RoostConfig,
                           federation_router: FederationRouter, view: RoomView,
                           closers: list[tuple[str, Any]],
                           waiter: sync.ChangeWaiter, directory_store: DirectoryStore,
                           presence_tracker: PresenceTracker,
                           federation_client: FederationClient) -> None:
    """Tags, third-party identifiers, OpenID and timestamp_to_event (client and federation
    sides), TURN, reports, search, and the deprecated /events and /initialSync."""
    pages = RoomPageStore(db)
    account = account_data.AccountData(AccountDataStore(db), streams["account_data"], notifier)

    async def room_exists(room_id: str) -> bool:
        return await engine.room_version(room_id) is not None

    tags.register(router, account, room_exists)
    threepid.register(router)
    support.register(router, config.support.contacts, config.support.page)
    openid_store = OpenIdStore(db)
    openid.register(router, openid_store, clock, config.server_name)
    federation_openid.register(federation_router, openid_store, clock)
    voip = config.voip
    voip_api.register(router, clock, voip.turn_uris, voip.turn_shared_secret,
                      voip.turn_user_lifetime, voip.turn_allow_guests)
    deprecated.register(router, deprecated.OldSync(
        engine, view, pages, SyncEventStore(db), streams["events"], waiter,
        AccountDataStore(db), streams["account_data"], directory_store, presence_tracker))
    reports.register(router, ReportStore(db), view, clock)
    timestamps_store = EventTimestampStore(db)
    timestamps.register(
        router, timestamps_store, view,
        functools.partial(federation_timestamps.ask_servers, federation_client),
        config.server_name)
    federation_timestamps.register(federation_router, timestamps_store, engine, view.access)
    guests = GuestAccessWatcher(GuestQueries(db), engine, streams["events"], notifier, clock)
    search_store = SearchStore(db)
    indexer = SearchIndexer(search_store, streams["events"], notifier, clock)
    if "background" in config.roles:  # followers that run in exactly one process
        guests.start()
        closers.append(("guest access watcher", guests.stop))
        indexer.start()
        closers.append(("search indexer", indexer.stop))
    search.register(router, search.RoomEventSearch(search_store, indexer, engine, view,
                                                   pages, AccountDataStore(db)))
