"""Building new local events in the room version's format.

Three steps, kept apart so the engine can check auth between choosing and
signing, and tests can look at each: ``build_event_pdu`` lays out the unsigned,
unhashed PDU; ``select_auth_event_ids`` picks its auth events from the current
state; ``finalize_pdu`` adds the content hash and this server's signature and
returns the event id. Wrap the result with ``Event.from_pdu`` to check it.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from roost.rooms.auth import StateKey, auth_types_for_event
from roost.rooms.events import room_id_from_create_event_id
from roost.rooms.hashing import (
    CANONICAL_INT_MAX,
    SigningKey,
    add_content_hash,
    compute_event_id,
    event_id_of_reference,
    sign_event_with_reference,
)
from roost.rooms.versions import RoomVersion

__all__ = [
    "auth_state_keys",
    "build_event_pdu",
    "copy_json",
    "create_event_content",
    "depth_after",
    "finalize_pdu",
    "make_event_id",
    "room_id_for_create_pdu",
    "select_auth_event_ids",
]


def build_event_pdu(
    version: RoomVersion,
    room_id: str | None,
    sender: str,
    event_type: str,
    content: Mapping[str, Any],
    state_key: str | None = None,
    *,
    prev_event_ids: Sequence[str],
    auth_event_ids: Sequence[str],
    depth: int,
    origin_server_ts: int,
    redacts: str | None = None,
    reference_hashes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Lay out an unsigned, unhashed PDU for ``version``.

    ``room_id`` must be None exactly for a v12 create event (its id is derived
    from the finished event). ``redacts`` goes where the version wants it: in
    content from v11, top level before. ``content`` is copied, never kept.
    In v1/v2 prev and auth events are ``[id, {"sha256": reference hash}]``
    pairs; ``reference_hashes`` gives the hashes known (others get ``{}``,
    which receivers accept: nobody checks them).
    """
    is_hydra_create = version.hydra and event_type == "m.room.create"
    if is_hydra_create != (room_id is None):
        raise ValueError("room_id must be omitted for, and only for, a v12 create event")
    if redacts is not None and event_type != "m.room.redaction":
        raise ValueError("only m.room.redaction events redact")
    pdu: dict[str, Any] = {
        "type": event_type,
        "sender": sender,
        "content": copy_json(dict(content)),
        "prev_events": _references(version, prev_event_ids, reference_hashes),
        "auth_events": _references(version, auth_event_ids, reference_hashes),
        "depth": depth,
        "origin_server_ts": origin_server_ts,
    }
    if room_id is not None:
        pdu["room_id"] = room_id
    if state_key is not None:
        pdu["state_key"] = state_key
    if redacts is not None:
        if version.updated_redaction_rules:
            pdu["content"]["redacts"] = redacts
        else:
            pdu["redacts"] = redacts
    return pdu


# Values a JSON copy shares instead of copying: they cannot be changed in place.
_ATOMS = frozenset({str, int, float, bool, type(None)})


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists and atoms), as `copy.deepcopy` makes it
    for those, without deepcopy's memo and dispatch (seven calls and a memo dict for a
    message's content, on every send); any other type inside goes to deepcopy. Not for
    values that contain themselves (JSON cannot)."""
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _ATOMS else copy_json(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _ATOMS else copy_json(v) for v in value]
    if kind in _ATOMS:
        return value
    return copy.deepcopy(value)


def _references(
    version: RoomVersion, event_ids: Sequence[str], hashes: Mapping[str, str] | None
) -> list[Any]:
    if not version.reference_pairs:
        return list(event_ids)
    known = hashes or {}
    return [[e, {"sha256": known[e]} if e in known else {}] for e in event_ids]


def make_event_id(server_name: str) -> str:
    """A v1/v2 event id: ``$`` + 18 random URL-safe characters + ``:`` + our name."""
    return f"${secrets.token_urlsafe(14)}:{server_name}"


def select_auth_event_ids(
    version: RoomVersion,
    event_type: str,
    sender: str,
    state_key: str | None,
    content: Mapping[str, Any],
    current_state: Mapping[StateKey, str],
) -> list[str]:
    """Pick the auth event ids from ``current_state`` ((type, state_key) -> event id).

    Follows the spec's selection (``auth.auth_types_for_event``), so v12 events
    never list the create event. Ids are unique and in selection order.
    """
    chosen = auth_state_keys(version, event_type, sender, state_key, content, current_state)
    return list(dict.fromkeys(current_state[key] for key in chosen))


def auth_state_keys(
    version: RoomVersion,
    event_type: str,
    sender: str,
    state_key: str | None,
    content: Mapping[str, Any],
    current_state: Mapping[StateKey, str],
) -> list[StateKey]:
    """The keys of ``current_state`` whose events ``select_auth_event_ids`` picks, in
    selection order: a local build files its auth events under them without looking
    through the whole state for their ids (a big room's state is thousands of keys)."""
    wanted = auth_types_for_event(event_type, sender, state_key, content, version)
    return [key for key in wanted if key in current_state]


def depth_after(prev_depths: Iterable[int]) -> int:
    """The depth of an event after events of ``prev_depths``: their maximum plus one.

    Capped at 2**53 - 1, as the spec asks once a room has reached the limit.
    The create event (no prev events) has depth 1.
    """
    return min(max(prev_depths, default=0) + 1, CANONICAL_INT_MAX)


def finalize_pdu(
    pdu: Mapping[str, Any],
    version: RoomVersion,
    server_name: str,
    signing_key: SigningKey,
) -> tuple[str, dict[str, Any]]:
    """Hash and sign ``pdu``; return ``(event_id, finished_pdu)``.

    The content hash goes first because the signature covers it (the
    signature is over the redacted event, which keeps ``hashes``). Any
    ``unsigned`` on the input is dropped: it is for transit, not for building.
    A v1/v2 PDU without an ``event_id`` gets one made by this server.
    """
    unsigned_free = {key: value for key, value in pdu.items() if key != "unsigned"}
    if version.event_id_in_pdu and not isinstance(unsigned_free.get("event_id"), str):
        unsigned_free["event_id"] = make_event_id(server_name)  # covered by hash and signature
    hashed = add_content_hash(unsigned_free)
    # The content hash walked everything but hashes and signatures (canonical_json): a
    # PDU that came with neither now holds nothing else the walk has not seen.
    walked = "hashes" not in pdu and "signatures" not in pdu
    reference, signed = sign_event_with_reference(hashed, version, server_name, signing_key,
                                                  walked=walked)
    if version.event_id_in_pdu:
        return signed["event_id"], signed
    return event_id_of_reference(reference, version), signed


def room_id_for_create_pdu(pdu: Mapping[str, Any], version: RoomVersion) -> str:
    """The room id a finished (hashed) v12 create PDU founds."""
    if not version.hydra:
        raise ValueError("only v12+ rooms derive their id from the create event")
    return room_id_from_create_event_id(compute_event_id(pdu, version))


def create_event_content(
    version: RoomVersion,
    creator: str,
    *,
    additional_creators: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of a new room's m.room.create event for ``version``.

    v10 requires ``creator`` (auth rule 1.4); v11 dropped it; only v12 knows
    ``additional_creators``. ``extra`` carries the rest (type, predecessor,
    m.federate) and cannot override those three.
    """
    content: dict[str, Any] = copy.deepcopy(dict(extra or {}))
    content["room_version"] = version.identifier
    content.pop("additional_creators", None)
    if version.creator_is_sender:
        content.pop("creator", None)
    else:
        content["creator"] = creator
    if additional_creators:
        if not version.additional_creators:
            raise ValueError(f"room version {version.identifier} has no additional creators")
        content["additional_creators"] = list(additional_creators)
    return content
