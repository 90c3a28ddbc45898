"""Roost's calls to application services: the HTTP under the transaction sender, the
user and alias queries, and the ping.

Requests carry the service's `hs_token` as a bearer token (the spec's current
form). Services are the operator's own processes, usually on loopback, so the
federation blocklist does not apply to them; a timeout does.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote, urlencode

from twisted.internet import defer
from twisted.web.client import HTTPConnectionPool

from roost.appservice.registration import AppService

JsonDict = dict[str, Any]
TIMEOUT_S = 30.0


class PingError(Exception):
    """The service did not answer the ping as it should; errcode and status say how."""

    def __init__(self, status: int, errcode: str, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.errcode = errcode
        self.error = error


class AppServiceHttp:
    def __init__(self, reactor: Any, timeout_s: float = TIMEOUT_S) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self._timeout = timeout_s

    async def request(self, method: str, url: str, token: str,
                      body: JsonDict | None = None) -> tuple[int, JsonDict]:
        import treq  # here, not at start: treq (1.7 MiB) only for servers that use it

        data = json.dumps(body).encode("utf-8") if body is not None else None
        resp = await treq.request(
            method, url, data=data, pool=self.pool, timeout=self._timeout,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        raw = await resp.content()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        return resp.code, parsed if isinstance(parsed, dict) else {}

    async def query_user(self, service: AppService, user_id: str) -> bool:
        """Ask the service to create a user in its namespace; True if it says it did."""
        return await self._query(service, f"/_matrix/app/v1/users/{quote(user_id, safe='')}")

    async def query_alias(self, service: AppService, alias: str) -> bool:
        return await self._query(service, f"/_matrix/app/v1/rooms/{quote(alias, safe='')}")

    async def _query(self, service: AppService, path: str) -> bool:
        if not service.url:
            return False
        try:
            status, _body = await self.request("GET", service.url + path, service.hs_token)
        except defer.CancelledError:
            raise
        except Exception:
            return False
        return status == 200

    async def thirdparty(self, service: AppService, path: str,
                         args: list[tuple[str, str]]) -> Any:
        """GET a third-party lookup (/_matrix/app/v1/thirdparty/...) from the service: its
        JSON answer (a protocol object or a list), or None when it has none or fails."""
        if not service.url:
            return None
        import treq  # here, not at start: treq (1.7 MiB) only for servers that use it

        query = ("?" + urlencode(args)) if args else ""
        try:
            resp = await treq.request(
                "GET", service.url + path + query, pool=self.pool, timeout=self._timeout,
                headers={"Authorization": f"Bearer {service.hs_token}"})
            raw = await resp.content()
        except defer.CancelledError:
            raise
        except Exception:
            return None
        if resp.code != 200:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    async def ping(self, service: AppService, transaction_id: str | None) -> int:
        """POST /_matrix/app/v1/ping; the round trip in ms, or a PingError."""
        if not service.url:
            raise PingError(400, "M_URL_NOT_SET", "Application service has no URL")
        body = {} if transaction_id is None else {"transaction_id": transaction_id}
        start = time.monotonic()
        try:
            status, answer = await self.request(
                "POST", f"{service.url}/_matrix/app/v1/ping", service.hs_token, body)
        except defer.CancelledError:
            raise
        except (defer.TimeoutError, TimeoutError):
            raise PingError(504, "M_CONNECTION_TIMEOUT", "Application service timed out") \
                from None
        except Exception as e:
            raise PingError(502, "M_CONNECTION_FAILED", f"Connection failed: {e}") from None
        if status != 200:
            raise PingError(502, "M_BAD_STATUS", f"Application service answered {status}")
        del answer
        return int((time.monotonic() - start) * 1000)
