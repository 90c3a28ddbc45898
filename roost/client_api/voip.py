"""GET /voip/turnServer: TURN credentials for calls, from coturn's shared secret.

coturn's `use-auth-secret` mode checks a username of `<expiry unix time>:<user
id>` and a password that is the base64 HMAC-SHA1 of that username under the
shared secret, so this server can hand out credentials without talking to
coturn. With no TURN URIs or no secret configured the answer is `{}`, which
clients read as "no TURN server".
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from twisted.internet.interfaces import IReactorTime

from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router


def turn_credentials(secret: str, user_id: str, expiry_s: int) -> tuple[str, str]:
    username = f"{expiry_s}:{user_id}"
    mac = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode("ascii")


def register(router: Router, clock: IReactorTime, uris: list[str], secret: str | None,
             lifetime_ms: int, allow_guests: bool) -> None:
    async def turn_server(req: ApiRequest) -> JsonDict:
        if not uris or not secret or (req.user.is_guest and not allow_guests):
            return {}
        ttl_s = max(1, lifetime_ms // 1000)
        username, password = turn_credentials(secret, req.user.user_id,
                                              int(clock.seconds()) + ttl_s)
        return {"username": username, "password": password, "uris": list(uris), "ttl": ttl_s}

    router.add("GET", f"{CLIENT_PREFIX}/voip/turnServer", turn_server)
