"""POST /keys/device_signing/upload and POST /keys/signatures/upload.

Cross-signing keys: the master key, and the self-signing and user-signing
keys, each of which must be signed by the master key. The first upload needs
no UI auth; replacing keys already stored asks for the account password
(uploading the same keys again does not). Signatures: a user's devices signed
by their self-signing key, their master key signed by one of their devices,
and other users' master keys signed by their user-signing key; each is
verified, and what fails is listed in `failures` while the rest is stored.
"""

from __future__ import annotations

from roost.client_api.device_lists import DeviceLists
from roost.client_api.errors import MatrixError
from roost.client_api.key_checks import check_cross_signing_key, invalid, verify
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.uia import UserInteractiveAuth
from roost.storage.e2e_keys import E2eKeyStore

CROSS_SIGNING_DEVICE = ""  # the device id under which cross-signing changes are recorded
FIELDS = (("master", "master_key"), ("self_signing", "self_signing_key"),
          ("user_signing", "user_signing_key"))


def _strip(obj: JsonDict) -> JsonDict:
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


def _failure(errcode: str, error: str) -> JsonDict:
    return {"errcode": errcode, "error": error}


class CrossSigning:
    def __init__(self, keys: E2eKeyStore, lists: DeviceLists, uia: UserInteractiveAuth) -> None:
        self._keys = keys
        self._lists = lists
        self._uia = uia

    async def upload_keys(self, user_id: str, body: JsonDict) -> None:
        new: dict[str, JsonDict] = {}
        for key_type, field in FIELDS:
            if body.get(field) is not None:
                check_cross_signing_key(body[field], user_id, key_type)
                new[key_type] = body[field]
        if not new:
            raise MatrixError(400, "M_MISSING_PARAM", "no cross-signing keys given")
        existing = (await self._keys.cross_signing_keys([user_id], user_id)).get(user_id, {})
        master = new.get("master") or existing.get("master")
        if master is None:
            raise invalid("a master key is needed before other cross-signing keys")
        master_id, master_pub = check_cross_signing_key(master, user_id, "master")
        for key_type in ("self_signing", "user_signing"):
            if key_type in new and not verify(new[key_type], user_id, master_id, master_pub):
                raise MatrixError(400, "M_INVALID_SIGNATURE",
                                  f"the {key_type} key is not signed by the master key")
        replacing = any(key_type in existing and _strip(existing[key_type]) != _strip(key)
                        for key_type, key in new.items())
        if replacing:
            await self._uia.require_password("POST keys/device_signing/upload", body, user_id)
        changed = {t: k for t, k in new.items()
                   if t not in existing or _strip(existing[t]) != _strip(k)}
        if not changed:
            return
        await self._keys.set_cross_signing_keys(user_id, changed)
        await self._lists.changed(user_id, [CROSS_SIGNING_DEVICE])

    async def upload_signatures(self, user_id: str, body: JsonDict) -> JsonDict:
        failures: dict[str, dict[str, JsonDict]] = {}
        rows: list[tuple[str, str, str, str, str]] = []
        changed_devices: set[str] = set()
        own_cross = (await self._keys.cross_signing_keys([user_id], user_id)).get(user_id, {})
        for target, by_key in body.items():
            if not isinstance(by_key, dict):
                raise MatrixError(400, "M_BAD_JSON", "each user must map key ids to objects")
            for key_id, signed in by_key.items():
                try:
                    if not isinstance(signed, dict):
                        raise _Fail("M_BAD_JSON", "the signed object must be a JSON object")
                    found = await self._check_one(user_id, own_cross, target, key_id, signed)
                    rows += found
                    if target == user_id:
                        changed_devices.add(key_id if not _is_master(own_cross, key_id)
                                            else CROSS_SIGNING_DEVICE)
                    else:
                        changed_devices.add(CROSS_SIGNING_DEVICE)
                except _Fail as f:
                    failures.setdefault(target, {})[key_id] = _failure(f.errcode, f.error)
        await self._keys.add_signatures(rows)
        if rows:
            await self._lists.changed(user_id, sorted(changed_devices))
        return {"failures": failures}

    async def _check_one(self, me: str, own_cross: JsonDict, target: str, key_id: str,
                         signed: JsonDict) -> list[tuple[str, str, str, str, str]]:
        """The signature rows a signed object carries, once each is verified."""
        if target == me and not _is_master(own_cross, key_id):
            device = (await self._keys.device_keys({me: [key_id]})).get(me, {}).get(key_id)
            if device is None:
                raise _Fail("M_NOT_FOUND", "no such device or key")
            stored, signer_key = device, own_cross.get("self_signing")
            usage = "self-signing"
        elif target == me:
            stored, signer_key, usage = own_cross["master"], None, "device"
        else:
            theirs = (await self._keys.cross_signing_keys([target], me)).get(target, {})
            if not _is_master(theirs, key_id):
                raise _Fail("M_NOT_FOUND", "signatures of other users go on their master key")
            stored, signer_key, usage = theirs["master"], own_cross.get("user_signing"), \
                "user-signing"
        if _strip(stored) != _strip(signed):
            raise _Fail("M_INVALID_SIGNATURE", "the signed object differs from the stored key")
        mine = signed.get("signatures", {}).get(me) if isinstance(
            signed.get("signatures"), dict) else None
        if not isinstance(mine, dict) or not mine:
            raise _Fail("M_INVALID_SIGNATURE", f"no signature by {me}")
        rows = []
        for sig_key_id, signature in mine.items():
            if not isinstance(signature, str):
                raise _Fail("M_INVALID_SIGNATURE", "a signature must be a string")
            if stored.get("signatures", {}).get(me, {}).get(sig_key_id) == signature:
                continue  # already there
            public = await self._signing_public_key(me, sig_key_id, signer_key, usage)
            if public is None or not verify(signed, me, sig_key_id, public):
                raise _Fail("M_INVALID_SIGNATURE", f"the signature {sig_key_id} does not verify"
                            f" with your {usage} key")
            rows.append((me, sig_key_id, target, key_id, signature))
        return rows

    async def _signing_public_key(self, me: str, sig_key_id: str, signer_key: JsonDict | None,
                                  usage: str) -> str | None:
        if usage == "device":  # the master key signed by one of the user's devices
            device_id = sig_key_id.removeprefix("ed25519:")
            device = (await self._keys.device_keys({me: [device_id]})).get(me, {}).get(device_id)
            return None if device is None else device.get("keys", {}).get(sig_key_id)
        if signer_key is None:
            return None
        return signer_key.get("keys", {}).get(sig_key_id)


def _is_master(cross: JsonDict, key_id: str) -> bool:
    master = cross.get("master")
    return master is not None and key_id in master.get("keys", {}).values()


class _Fail(Exception):
    def __init__(self, errcode: str, error: str) -> None:
        super().__init__(error)
        self.errcode = errcode
        self.error = error


def register(router: Router, cross: CrossSigning) -> None:
    async def device_signing(req: ApiRequest) -> JsonDict:
        await cross.upload_keys(req.user.user_id, req.json())
        return {}

    async def signatures(req: ApiRequest) -> JsonDict:
        return await cross.upload_signatures(req.user.user_id, req.json())

    router.add("POST", f"{CLIENT_PREFIX}/keys/device_signing/upload", device_signing)
    router.add("POST", f"{CLIENT_PREFIX}/keys/signatures/upload", signatures)

