"""Discovery endpoints: /versions, /.well-known/matrix/client, /health."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from roost.client_api.resource import ApiRequest, JsonDict, Router

SPEC_VERSIONS = ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
                 "v1.9", "v1.10", "v1.11", "v1.12"]


HealthCheck = Callable[[], Awaitable[object]]


def register(router: Router, baseurl: str,
             checks: dict[str, HealthCheck] | None = None) -> None:
    """`checks`: the backing services /health reports on (the database; Redis when on)."""
    async def versions(req: ApiRequest) -> JsonDict:
        return {"versions": SPEC_VERSIONS, "unstable_features": {}}

    async def well_known(req: ApiRequest) -> JsonDict:
        return {"m.homeserver": {"base_url": baseurl.rstrip("/")}}

    async def health(req: ApiRequest) -> tuple[int, JsonDict]:
        """200 when every backing service answers, 503 naming the one that does not."""
        body: JsonDict = {"status": "ok"}
        for name, check in (checks or {}).items():
            try:
                await check()
                body[name] = "ok"
            except Exception as e:
                body[name] = f"unreachable: {type(e).__name__}"
                body["status"] = "degraded"
        return (200 if body["status"] == "ok" else 503), body

    router.add("GET", "/_matrix/client/versions", versions, auth=False)
    router.add("GET", "/.well-known/matrix/client", well_known, auth=False)
    router.add("GET", "/health", health, auth=False)
