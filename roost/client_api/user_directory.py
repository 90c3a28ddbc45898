"""POST /user_directory/search: find users the searcher shares a room with or who are in a public room."""

from __future__ import annotations

from roost.client_api.errors import invalid_param, missing_param
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.storage.profiles import DirectoryEntry, ProfileStore

DEFAULT_LIMIT = 10
# A client asking for more gets this many; `limited` tells it there were more.
MAX_LIMIT = 100


def _entry_json(entry: DirectoryEntry) -> JsonDict:
    result: JsonDict = {"user_id": entry.user_id}
    if entry.display_name is not None:
        result["display_name"] = entry.display_name
    if entry.avatar_url is not None:
        result["avatar_url"] = entry.avatar_url
    return result


def _limit(body: JsonDict) -> int:
    limit = body.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise invalid_param("limit must be a non-negative integer")
    return min(limit, MAX_LIMIT)


def register(router: Router, store: ProfileStore) -> None:
    async def search(req: ApiRequest) -> JsonDict:
        body = req.json()
        term = body.get("search_term")
        if term is None:
            raise missing_param("search_term")
        if not isinstance(term, str):
            raise invalid_param("search_term must be a string")
        entries, limited = await store.search_directory(req.user.user_id, term, _limit(body))
        return {"results": [_entry_json(e) for e in entries], "limited": limited}

    router.add("POST", f"{CLIENT_PREFIX}/user_directory/search", search)
