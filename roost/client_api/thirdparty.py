"""The third-party lookups (GET /thirdparty/...): protocols, locations and users that
application services (bridges) know.

Each registration lists the protocols its service bridges; the lookups are
passed on to the services of that protocol (over /_matrix/app/v1/thirdparty)
and their answers put together. A service that fails or does not answer is
left out. With no service for a protocol it is unknown (404); a search that
none of them answers is 404 as well, as the spec has it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from roost.client_api.appservice import AppServices
from roost.client_api.errors import missing_param, not_found
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router

AS_PREFIX = "/_matrix/app/v1/thirdparty"


def _fields(req: ApiRequest) -> list[tuple[str, str]]:
    """The query's search fields, passed on as given (the access token stays here)."""
    return [(k.decode("utf-8", "replace"), v.decode("utf-8", "replace"))
            for k, values in req.http.args.items() if k != b"access_token" for v in values]


def register(router: Router, appservices: AppServices) -> None:
    def serving(protocol: str | None) -> list[Any]:
        return [s for s in appservices.services
                if (protocol in s.protocols if protocol is not None else s.protocols)]

    async def ask(services: list[Any], path: str, args: list[tuple[str, str]]) -> list[Any]:
        http = appservices.http
        if http is None:
            return []
        return [answer for s in services
                if (answer := await http.thirdparty(s, path, args)) is not None]

    async def protocol_of(protocol: str) -> JsonDict | None:
        answers = [a for a in await ask(serving(protocol),
                                        f"{AS_PREFIX}/protocol/{quote(protocol, safe='')}", [])
                   if isinstance(a, dict)]
        if not answers:
            return None
        merged = dict(answers[0])
        # Every service's instances, as clients choose among them.
        merged["instances"] = [i for a in answers for i in a.get("instances") or []
                               if isinstance(i, dict)]
        return merged

    async def protocols(req: ApiRequest) -> JsonDict:
        names = sorted({p for s in appservices.services for p in s.protocols})
        found = {}
        for name in names:
            metadata = await protocol_of(name)
            if metadata is not None:
                found[name] = metadata
        return found

    async def protocol(req: ApiRequest) -> JsonDict:
        metadata = await protocol_of(req.params["protocol"])
        if metadata is None:
            raise not_found("Unknown protocol")
        return metadata

    def lookup(kind: str, by_protocol: bool, required: str | None = None) -> Any:
        async def handler(req: ApiRequest) -> tuple[int, Any]:
            args = _fields(req)
            if required is not None and not any(k == required for k, _ in args):
                raise missing_param(required)
            if by_protocol:
                name = req.params["protocol"]
                services = serving(name)
                if not services:
                    raise not_found("Unknown protocol")
                path = f"{AS_PREFIX}/{kind}/{quote(name, safe='')}"
            else:
                services, path = serving(None), f"{AS_PREFIX}/{kind}"
            found = [item for answer in await ask(services, path, args)
                     if isinstance(answer, list) for item in answer if isinstance(item, dict)]
            if not found:
                raise not_found(f"No {kind}s found")
            return 200, found  # type: ignore[return-value]

        return handler

    T = f"{CLIENT_PREFIX}/thirdparty"
    router.add("GET", f"{T}/protocols", protocols)
    router.add("GET", f"{T}/protocol/{{protocol}}", protocol)
    router.add("GET", f"{T}/location/{{protocol}}", lookup("location", True))
    router.add("GET", f"{T}/user/{{protocol}}", lookup("user", True))
    router.add("GET", f"{T}/location", lookup("location", False, "alias"))
    router.add("GET", f"{T}/user", lookup("user", False, "userid"))
