"""PUT /sendToDevice/{eventType}/{txnId}, and delivery of to-device messages from other servers.

Messages for local devices go into their inboxes at one position of the
to_device stream and wake the recipients; `*` means every device of the user.
Messages for remote users leave as one m.direct_to_device EDU per user
through the federation sender's durable queue. A transaction id is
idempotent per device: a retried request changes nothing. Limits: at most
MAX_TARGETS devices per request and MAX_MESSAGE_BYTES per message, else a
Matrix error and nothing is sent.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from roost.client_api.errors import MatrixError, bad_json, fenced_as_unavailable
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.storage.device_inbox import DeviceInboxStore
from roost.storage.e2e_keys import E2eKeyStore
from roost.storage.streams import StreamIdGenerator

MAX_TARGETS = 1000
MAX_MESSAGE_BYTES = 48 * 1024

QueueEdus = Callable[[list[tuple[str, str, JsonDict]]], Awaitable[None]]


def _server(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


class ToDevice:
    def __init__(self, inbox: DeviceInboxStore, keys: E2eKeyStore, stream: StreamIdGenerator,
                 server_name: str, clock: Any, queue_edus: QueueEdus | None = None) -> None:
        self.inbox = inbox
        self._keys = keys
        self.stream = stream  # announced on the notifier as "to_device"
        self._server_name = server_name
        self._clock = clock
        self._queue_edus = queue_edus

    async def _expand(self, sender: str, kind: str, messages: dict[str, dict[str, Any]]
                      ) -> list[tuple[str, str, JsonDict]]:
        rows: list[tuple[str, str, JsonDict]] = []
        for user_id, by_device in messages.items():
            devices = by_device
            if "*" in by_device:
                devices = {d: by_device["*"] for d in await self._keys.all_device_ids(user_id)}
                devices.update({d: c for d, c in by_device.items() if d != "*"})
            for device_id, content in devices.items():
                rows.append((user_id, device_id, {"sender": sender, "type": kind,
                                                  "content": content}))
        return rows

    async def deliver_local(self, sender: str, kind: str, messages: dict[str, dict[str, Any]],
                            txn_key: tuple[str, str, str] | None = None,
                            federation_key: tuple[str, str] | None = None) -> bool:
        """Put messages for local users in their inboxes once; False if already done."""
        rows = await self._expand(sender, kind, messages)
        with fenced_as_unavailable():
            [position] = self.stream.allocate(1)
            done = False
            try:
                fed = None if federation_key is None else (
                    *federation_key, int(self._clock.seconds() * 1000))
                done = await self.inbox.deliver(rows, position, txn_key, fed, self.stream.fence)
            finally:
                # The stream wakes the recipients once every earlier position is written.
                self.stream.finish([position], users={r[0] for r in rows} if done else ())
        return done

    async def from_federation(self, origin: str, message_id: str, sender: str, kind: str,
                              messages: JsonDict) -> None:
        """An m.direct_to_device EDU: delivered once per (origin, message id)."""
        clean = {u: {d: c for d, c in m.items() if isinstance(c, dict)}
                 for u, m in messages.items() if isinstance(m, dict)}
        await self.deliver_local(sender, kind, clean, federation_key=(origin, message_id))

    async def send(self, sender: str, device_id: str, kind: str, txn_id: str,
                   messages: dict[str, dict[str, Any]]) -> None:
        local = {u: m for u, m in messages.items() if _server(u) == self._server_name}
        remote = {u: m for u, m in messages.items() if _server(u) != self._server_name}
        first = await self.deliver_local(sender, kind, local, txn_key=(sender, device_id, txn_id))
        if not first or not remote or self._queue_edus is None:
            return
        edus = [(_server(user_id), "m.direct_to_device",
                 {"sender": sender, "type": kind, "message_id": secrets.token_urlsafe(16),
                  "messages": {user_id: by_device}})
                for user_id, by_device in sorted(remote.items())]
        await self._queue_edus(edus)


def check_messages(body: JsonDict) -> dict[str, dict[str, Any]]:
    messages = body.get("messages")
    if messages is None:
        raise MatrixError(400, "M_MISSING_PARAM", "missing parameter: messages")
    if not isinstance(messages, dict):
        raise bad_json("messages must be an object of user ids")
    targets = 0
    for user_id, by_device in messages.items():
        if not user_id.startswith("@") or ":" not in user_id:
            raise MatrixError(400, "M_INVALID_PARAM", f"{user_id!r} is not a user id")
        if not isinstance(by_device, dict):
            raise bad_json("each user's messages must be an object of device ids")
        for content in by_device.values():
            if not isinstance(content, dict):
                raise bad_json("each message must be a JSON object")
            if len(json.dumps(content, separators=(",", ":"))) > MAX_MESSAGE_BYTES:
                raise MatrixError(413, "M_TOO_LARGE",
                                  f"a to-device message may be at most {MAX_MESSAGE_BYTES} bytes")
        targets += len(by_device)
    if targets > MAX_TARGETS:
        raise MatrixError(400, "M_INVALID_PARAM",
                          f"at most {MAX_TARGETS} devices per request")
    return messages


def register(router: Router, to_device: ToDevice) -> None:
    async def send_to_device(req: ApiRequest) -> JsonDict:
        messages = check_messages(req.json())
        await to_device.send(req.user.user_id, req.user.device_id, req.params["event_type"],
                             req.params["txn_id"], messages)
        return {}

    router.add("PUT", f"{CLIENT_PREFIX}/sendToDevice/{{event_type}}/{{txn_id}}", send_to_device)
