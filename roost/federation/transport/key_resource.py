"""The HTTP side of `/_matrix/key/v2/*`, on the federation listener.

The bodies come from `roost.keys.resource.KeyServer`; this module only maps
paths and errors. These endpoints are unauthenticated: a server must be able
to learn our keys before it can check anything we signed.
"""

from __future__ import annotations

from roost.federation.transport.server import FederationRequest, FederationRouter, JsonDict
from roost.http.errors import MatrixError
from roost.keys.resource import KeyQueryError, KeyServer


def register(router: FederationRouter, key_server: KeyServer) -> None:
    async def server_keys(_req: FederationRequest) -> JsonDict:
        return key_server.own_keys()

    async def query(req: FederationRequest) -> JsonDict:
        try:
            return await key_server.query(req.json())
        except KeyQueryError as e:
            raise MatrixError(400, e.errcode, e.message) from None

    async def query_one(req: FederationRequest) -> JsonDict:
        min_valid = req.int_arg("minimum_valid_until_ts")
        return await key_server.query_server(req.params["serverName"], min_valid)

    router.add("GET", "/_matrix/key/v2/server", server_keys, auth=False)
    # Deprecated, but still asked for by older servers: the key id is ignored.
    router.add("GET", "/_matrix/key/v2/server/{keyId}", server_keys, auth=False)
    router.add("POST", "/_matrix/key/v2/query", query, auth=False)
    router.add("GET", "/_matrix/key/v2/query/{serverName}", query_one, auth=False)
