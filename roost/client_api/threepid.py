"""Third-party identifiers (email, phone) on a server with no email, SMS or identity server.

Roost sends no email or SMS and trusts no identity server, so an account has
no third-party identifiers and none can be added (GET /capabilities says
m.3pid_changes is off). Each endpoint still checks its body and answers with
the spec's error for what this server cannot do, so clients show a reason:

- GET /account/3pid: an empty list;
- the requestToken endpoints (register, password reset, account):
  400 M_THREEPID_MEDIUM_NOT_SUPPORTED;
- add, bind and the deprecated POST /account/3pid: 403 (nothing can be validated);
- delete: 404 M_THREEPID_NOT_FOUND (the account has none); unbind: no-support.
"""

from __future__ import annotations

from typing import Any

from roost.client_api.errors import MatrixError, bad_json, forbidden, missing_param
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router

_EMAIL_FIELDS = {"client_secret": str, "email": str, "send_attempt": int}
_MSISDN_FIELDS = {"client_secret": str, "country": str, "phone_number": str, "send_attempt": int}


def _require(body: dict[str, Any], fields: dict[str, type]) -> None:
    for name, kind in fields.items():
        if name not in body:
            raise missing_param(name)
        value = body[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad_json(f"{name} must be a {'string' if kind is str else 'number'}")


def register(router: Router) -> None:
    def request_token(medium: str) -> Any:
        fields = _EMAIL_FIELDS if medium == "email" else _MSISDN_FIELDS

        async def handler(req: ApiRequest) -> JsonDict:
            _require(req.json(), fields)
            raise MatrixError(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED",
                              f"This server does not support {medium} verification")

        return handler

    async def list_3pids(req: ApiRequest) -> JsonDict:
        return {"threepids": []}

    async def add_deprecated(req: ApiRequest) -> JsonDict:
        creds = req.json().get("three_pid_creds")
        if not isinstance(creds, dict):
            raise missing_param("three_pid_creds")
        _require(creds, {"client_secret": str, "sid": str})
        raise MatrixError(403, "M_THREEPID_AUTH_FAILED",
                          "This server has no identity server to check the credentials with")

    async def add(req: ApiRequest) -> JsonDict:
        _require(req.json(), {"client_secret": str, "sid": str})
        raise forbidden("Third-party identifiers cannot be added on this server")

    async def bind(req: ApiRequest) -> JsonDict:
        _require(req.json(), {"client_secret": str, "id_server": str, "id_access_token": str,
                              "sid": str})
        raise forbidden("This server does not bind third-party identifiers")

    def check_removal(req: ApiRequest) -> None:
        body = req.json()
        _require(body, {"medium": str, "address": str})
        if body["medium"] not in ("email", "msisdn"):
            raise MatrixError(400, "M_INVALID_PARAM", "medium must be email or msisdn")
        if "id_server" in body and not isinstance(body["id_server"], str):
            raise bad_json("id_server must be a string")

    async def delete(req: ApiRequest) -> JsonDict:
        check_removal(req)
        raise MatrixError(404, "M_THREEPID_NOT_FOUND", "The account has no such identifier")

    async def unbind(req: ApiRequest) -> JsonDict:
        check_removal(req)
        return {"id_server_unbind_result": "no-support"}

    A = f"{CLIENT_PREFIX}/account"
    router.add("GET", f"{A}/3pid", list_3pids)
    router.add("POST", f"{A}/3pid", add_deprecated)
    router.add("POST", f"{A}/3pid/add", add)
    router.add("POST", f"{A}/3pid/bind", bind)
    router.add("POST", f"{A}/3pid/delete", delete)
    router.add("POST", f"{A}/3pid/unbind", unbind)
    for medium in ("email", "msisdn"):
        router.add("POST", f"{A}/3pid/{medium}/requestToken", request_token(medium))
        router.add("POST", f"{CLIENT_PREFIX}/register/{medium}/requestToken",
                   request_token(medium), auth=False, rate_limit="registration")
        router.add("POST", f"{A}/password/{medium}/requestToken", request_token(medium),
                   auth=False, rate_limit="registration")
