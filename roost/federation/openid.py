"""GET /_matrix/federation/v1/openid/userinfo: who holds an OpenID token.

Not X-Matrix authenticated: the caller is usually an integration manager or
other web service, not a homeserver; the token itself is the credential.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from roost.federation.transport.server import FederationRequest, FederationRouter, JsonDict
from roost.http.errors import MatrixError
from roost.storage.openid import OpenIdStore


def register(router: FederationRouter, store: OpenIdStore, clock: IReactorTime) -> None:
    async def userinfo(req: FederationRequest) -> JsonDict:
        token = req.arg("access_token")
        if not token:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Missing OpenID access token")
        user_id = await store.user_for(token, int(clock.seconds() * 1000))
        if user_id is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Token is unknown or has expired")
        return {"sub": user_id}

    router.add("GET", "/_matrix/federation/v1/openid/userinfo", userinfo, auth=False)
