"""GET /.well-known/matrix/support: who to contact about this server, from the configuration."""

from __future__ import annotations

from typing import Any

from roost.client_api.errors import not_found
from roost.client_api.resource import ApiRequest, JsonDict, Router


def register(router: Router, contacts: list[Any], page: str | None) -> None:
    body: JsonDict = {}
    if contacts:
        body["contacts"] = [
            {"role": c.role, **{k: v for k, v in (("matrix_id", c.matrix_id),
                                                  ("email_address", c.email_address)) if v}}
            for c in contacts]
    if page:
        body["support_page"] = page

    async def support(req: ApiRequest) -> JsonDict:
        if not body:
            raise not_found("No support information is configured")
        return body

    router.add("GET", "/.well-known/matrix/support", support, auth=False)
