"""Wiring of the features built on the core: the media repository, push (rules,
evaluation, counts, pushers) and end-to-end encryption.

Split from wiring.py, which builds the core and calls these; like wiring, this
module knows every package and passes each part exactly what it uses.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from roost.client_api import (
    account_data,
    cross_signing,
    keys,
    notifications,
    push_rules,
    pushers,
    room_keys,
    to_device,
)
from roost.client_api.device_lists import DeviceLists
from roost.client_api.resource import RoostSite, Router
from roost.client_api.room_view import RoomView
from roost.client_api.sync_builder import SyncBuilder, SyncToken
from roost.client_api.sync_e2e import E2eSync, device_lists_news, never_news
from roost.client_api.uia import UserInteractiveAuth
from roost.federation.device_edus import (
    DeviceListSender,
    InboundDeviceEdus,
    RemoteDeviceTracking,
)
from roost.federation.sender import FederationSender
from roost.federation.user_keys import KeyQueries
from roost.homeserver.config import RoostConfig
from roost.media import resource as media_resource
from roost.media.repository import MediaRepository, MediaSettings
from roost.media.store import LocalFileStore
from roost.media.thumbnails import Size, configure_pillow
from roost.push.evaluator import PushEvaluator
from roost.push.pushers import PusherDelivery, event_details
from roost.rooms.engine import RoomEngine
from roost.storage.database import Database
from roost.storage.device_inbox import DeviceInboxStore
from roost.storage.device_lists import DeviceListStore
from roost.storage.devices import DeviceStore
from roost.storage.e2e_backup import KeyBackupStore
from roost.storage.e2e_keys import E2eKeyStore
from roost.storage.media import MediaStore
from roost.storage.notifier import Notifier
from roost.storage.push import PushActionStore, PusherStore, PushRuleStore
from roost.storage.streams import StreamIdGenerator
from roost.storage.sync_data import AccountDataStore

if TYPE_CHECKING:  # wiring imports this module; the record type only
    from roost.homeserver.wiring import FederationParts

logger = logging.getLogger(__name__)


@dataclass
class PushParts:
    """Push evaluation, delivery to gateways, and the unread counts /sync serves."""

    evaluator: PushEvaluator
    delivery: PusherDelivery
    unread: notifications.UnreadCounts


def register_media(config: RoostConfig, reactor: Any, clock: IReactorTime, db: Database,
                    router: Router, federation: FederationParts, site: RoostSite,
                    closers: list[tuple[str, Any]]) -> MediaRepository:
    """The media repository: client and federation endpoints, upload bodies up to
    max_upload_size spooled to disk beside the store, pending uploads expired."""
    from twisted.internet import task

    from roost.federation.transport.client import IpBlocklist

    media = config.media
    configure_pillow(media.max_image_pixels)
    store = LocalFileStore(config.path(os.path.join(config.data_dir, "media")))
    settings = MediaSettings(
        config.server_name, media.max_upload_size, media.max_pending_uploads,
        media.unused_expiry, media.legacy_unauthenticated_media, media.remote_cache_max_bytes,
        media.max_image_pixels,
        tuple(Size(s.width, s.height, s.method) for s in media.thumbnail_sizes))
    repo = MediaRepository(settings, store, MediaStore(db), clock, federation.client,
                           store.tmp_dir)
    previewer = None
    if media.url_preview.enabled:
        from roost.media.preview import UrlPreviewer

        ranges = media.url_preview.ip_range_blocklist
        blocklist = IpBlocklist(config.federation.ip_range_blocklist if ranges is None else ranges)
        previewer = UrlPreviewer(reactor, clock, blocklist.blocks, repo,
                                 media.url_preview.max_bytes, media.url_preview.timeout)
    if "media" not in config.roles:
        return repo  # the admin API's media calls only; the media process serves the rest
    media_resource.register_client(router, repo, previewer)
    media_resource.register_federation(federation.router, repo)
    for prefix in media_resource.UPLOAD_PREFIXES:
        site.large_bodies[prefix] = media.max_upload_size
    site.spool_dir = store.tmp_dir
    sweeper = task.LoopingCall(lambda: defer.ensureDeferred(repo.expire_pending()))
    sweeper.clock = clock
    sweeper.start(600, now=False).addErrback(lambda f: logger.error("media sweep: %s", f))
    closers.append(("media sweeper", sweeper.stop))
    return repo


async def build_push(router: Router, db: Database, reactor: Any, clock: IReactorTime,
                      config: RoostConfig, notifier: Notifier, engine: RoomEngine,
                      view: RoomView, streams: dict[str, StreamIdGenerator],
                      closers: list[tuple[str, Any]],
                      password_hooks: list[Any], builder: SyncBuilder,
                      stream_wiring: Any = None) -> PushParts:
    """Push rules, evaluation off the events stream, notification counts, pushers."""
    from twisted.web.client import HTTPConnectionPool

    from roost.federation.transport.client import IpBlocklist
    from roost.http.outbound import checked_agent

    actions = PushActionStore(db)
    evaluator = PushEvaluator(actions, PushRuleStore(db), engine, streams["events"], notifier,
                              config.server_name, clock)
    counts = evaluator if stream_wiring is None else stream_wiring.unread_counts(
        evaluator, notifier, "pusher" in config.roles)
    if "pusher" in config.roles:
        await evaluator.start()
        closers.append(("push evaluator", evaluator.stop))
    else:
        evaluator.evaluated_elsewhere()
    blocklist = config.push.ip_range_blocklist
    if blocklist is None:
        blocklist = config.federation.ip_range_blocklist
    pool = HTTPConnectionPool(reactor, persistent=True)
    # A pusher's URL is the client's choice: resolve it and refuse the blocked ranges.
    agent = checked_agent(reactor, IpBlocklist(blocklist).blocks, pool)
    delivery = PusherDelivery(
        PusherStore(db), actions, evaluator, event_details(engine), reactor, clock,
        min_retry_interval_ms=config.push.min_retry_interval,
        max_retry_interval_ms=config.push.max_retry_interval, agent=agent, pool=pool)
    if "pusher" in config.roles:
        await delivery.start()
        closers.append(("pushers", delivery.stop))
    account = account_data.AccountData(AccountDataStore(db), streams["account_data"], notifier)
    rules = push_rules.PushRules(
        PushRuleStore(db),
        evaluator if stream_wiring is None else stream_wiring.push_rule_changes(evaluator),
        account)
    push_rules.register(router, rules)
    builder.add_default_account_data("m.push_rules", rules.account_data_content)
    notifications.register(router, actions, view)
    pusher_service = pushers.Pushers(PusherStore(db), delivery, evaluator, clock)
    pushers.register(router, pusher_service)
    password_hooks.append(pusher_service.password_changed)
    unread = notifications.UnreadCounts(actions, counts)
    builder.add_room_field("unread_notifications", unread.unread_notifications,
                           unread.unread_notifications_at_once)
    builder.add_room_field("unread_thread_notifications", unread.unread_thread_notifications,
                           unread.unread_thread_notifications_at_once)
    builder.add_ready(unread.ready)
    return PushParts(evaluator, delivery, unread)


async def build_e2ee(router: Router, db: Database, config: RoostConfig, clock: IReactorTime,
                      notifier: Notifier, streams: dict[str, StreamIdGenerator],
                      device_store: DeviceStore, uia: UserInteractiveAuth,
                      federation: FederationParts, sender: FederationSender,
                      closers: list[tuple[str, Any]], builder: SyncBuilder,
                      on_deactivate: list[Any], stream_wiring: Any = None) -> InboundDeviceEdus:
    """End-to-end encryption: keys, cross-signing, key backup, to-device messages, device
    lists (the to_device and device_lists streams) and their federation side."""
    key_store = E2eKeyStore(db)
    list_store = DeviceListStore(db, config.server_name)
    if stream_wiring is None:  # one process, built without the wiring (tests)
        streams["to_device"] = StreamIdGenerator(await DeviceInboxStore(db).max_stream_id())
        streams["device_lists"] = StreamIdGenerator(await list_store.max_stream_id())
    else:
        streams["to_device"] = await stream_wiring.stream(
            "to_device", await DeviceInboxStore(db).max_stream_id())
        streams["device_lists"] = await stream_wiring.stream(
            "device_lists", await list_store.max_stream_id())
    streams["to_device"].announce_to(notifier, "to_device")
    streams["device_lists"].announce_to(notifier, "device_lists")
    lists = DeviceLists(list_store, streams["device_lists"])
    device_store.on_devices_deleted.append(lists.devices_deleted)
    device_store.on_devices_renamed.append(lists.devices_renamed)
    on_deactivate.append(lists.account_deactivated)
    queries = KeyQueries(key_store, list_store, federation.client, config.server_name)
    queries.register(federation.router)
    to_device_service = to_device.ToDevice(DeviceInboxStore(db), key_store, streams["to_device"],
                                           config.server_name, clock, sender.queue_edus)
    to_device.register(router, to_device_service)
    keys.register(router, keys.KeyUploads(key_store, lists), queries, lists,
                  _token_positions)
    cross_signing.register(router, cross_signing.CrossSigning(key_store, lists, uia))
    room_keys.register(router, KeyBackupStore(db))
    list_sender = DeviceListSender(list_store, key_store, notifier, sender.queue_edus,
                                   config.server_name, streams["device_lists"].current)
    if "background" in config.roles:
        await list_sender.start()
        closers.append(("device list sender", list_sender.stop))
    tracking = RemoteDeviceTracking(list_store, notifier, config.server_name)
    closers.append(("remote device tracking", tracking.stop))
    e2e_sync = E2eSync(DeviceInboxStore(db), list_store, key_store, streams["events"].current)
    notifier.add_cache(e2e_sync.on_change)
    builder.add_stream("to_device", lambda: streams["to_device"].current)
    builder.add_stream("device_lists", lambda: streams["device_lists"].current)
    builder.add_section("to_device", e2e_sync.to_device, at_once=e2e_sync.to_device_at_once)
    builder.add_section("device_lists", e2e_sync.device_lists, device_lists_news,
                        e2e_sync.device_lists_at_once)
    builder.add_section("device_one_time_keys_count", e2e_sync.one_time_keys_count, never_news,
                        e2e_sync.one_time_keys_count_at_once)
    builder.add_section("device_unused_fallback_key_types", e2e_sync.unused_fallback_key_types,
                        never_news, e2e_sync.unused_fallback_key_types_at_once)
    return InboundDeviceEdus(queries, list_store, lists.changed, to_device_service.from_federation)


def _token_positions(raw: str) -> tuple[int, int]:
    """(events, device_lists) positions of a sync token, for /keys/changes."""
    token = SyncToken.parse(raw)
    return token.events, getattr(token, "device_lists", 0)
