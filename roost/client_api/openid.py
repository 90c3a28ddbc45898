"""POST /user/{userId}/openid/request_token: a token a third party can check with us.

The holder shows the token to a web service, which asks this server's
federation API (roost.federation.openid) whose it is. It proves nothing but the
user's id, and expires after an hour.
"""

from __future__ import annotations

import secrets

from twisted.internet.interfaces import IReactorTime

from roost.client_api.errors import forbidden
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.storage.openid import OpenIdStore

LIFETIME_S = 3600


def register(router: Router, store: OpenIdStore, clock: IReactorTime, server_name: str) -> None:
    async def request_token(req: ApiRequest) -> JsonDict:
        if req.params["user_id"] != req.user.user_id:
            raise forbidden("You may only request OpenID tokens for yourself")
        req.json(required=False)  # the body is {} but must be JSON if present
        now_ms = int(clock.seconds() * 1000)
        token = secrets.token_urlsafe(32)
        await store.add(token, req.user.user_id, now_ms + LIFETIME_S * 1000, now_ms)
        return {"access_token": token, "token_type": "Bearer",
                "matrix_server_name": server_name, "expires_in": LIFETIME_S}

    router.add("POST", f"{CLIENT_PREFIX}/user/{{user_id}}/openid/request_token", request_token)
