"""A frozen room event, checked for form once and then trusted.

``Event.from_pdu`` is the single door through which a PDU dict becomes an
event the rest of Roost may reason about: it validates the event format and
the size limits, and computes the canonical bytes and the event id exactly
once. Everything after it (auth, state resolution, storage) can read
properties without re-checking types.

What ``from_pdu`` does not do: check hashes, signatures or auth. Those need
keys or state and belong to ``hashing``/``auth`` and to the ingest checklist.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from roost.rooms.hashing import (
    CANONICAL_INT_MAX,
    CANONICAL_INT_MIN,
    CanonicalJSONError,
    canonical_json,
    compute_event_id,
    server_name_of,
)
from roost.rooms.redaction import redact_pdu
from roost.rooms.versions import RoomVersion

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_ID_BYTES",
    "CanonicalJSONError",
    "Event",
    "EventFormatError",
    "canonical_json",
    "is_valid_server_name",
    "is_valid_user_id",
    "room_id_from_create_event_id",
    "server_name_of",
]

# Spec, client-server API "Size limits".
MAX_EVENT_BYTES = 65536
MAX_ID_BYTES = 255
# Schema: auth_events "less than or equal to 10", prev_events "... 20".
MAX_AUTH_EVENTS = 10
MAX_PREV_EVENTS = 20

# Appendices, "Server Name": a DNS name or IPv4 literal, or a bracketed IPv6
# literal, each with an optional port.
_SERVER_NAME_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.\-]{1,255})(?::[0-9]{1,5})?")


class EventFormatError(ValueError):
    """The PDU is not a well-formed event for its room version.

    ``errcode`` is the Matrix error code a client should see: ``M_TOO_LARGE``
    for size limits, ``M_BAD_JSON`` for everything else. Over federation such
    events are dropped.
    """

    def __init__(self, errcode: str, msg: str) -> None:
        super().__init__(f"{errcode}: {msg}")
        self.errcode = errcode
        self.msg = msg


def is_valid_server_name(name: str) -> bool:
    """Whether ``name`` follows the appendix's server name grammar."""
    return _SERVER_NAME_RE.fullmatch(name) is not None


def is_usable_server_name(name: str) -> bool:
    """A server name this server could connect to: the grammar, and a port (if any) in
    1..65535 (what a client names as a room's server or a `via`)."""
    if not is_valid_server_name(name):
        return False
    host_end = name.rfind("]") if name.startswith("[") else -1
    port = name[host_end + 1:].partition(":")[2] if host_end != -1 else name.partition(":")[2]
    return not port or 0 < int(port) < 65536


def is_valid_user_id(user_id: object) -> bool:
    """Whether ``user_id`` is a user id servers must accept over federation.

    Historical localparts are allowed (any code points but ``:`` and NUL, even
    empty), because events from such users still circulate; the server name
    and the 255-byte limit are enforced.
    """
    if not isinstance(user_id, str) or not user_id.startswith("@"):
        return False
    localpart, sep, server = user_id[1:].partition(":")
    if not sep or "\x00" in localpart:
        return False
    return _utf8_len(user_id) <= MAX_ID_BYTES and is_valid_server_name(server)


def room_id_from_create_event_id(event_id: str) -> str:
    """v12: a room's id is its create event's id with the sigil ``!`` for ``$``."""
    return "!" + event_id[1:]


def _utf8_len(value: str) -> int:
    """Bytes of ``value`` in UTF-8; lone surrogates count as not encodable."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise EventFormatError("M_BAD_JSON", "string is not valid unicode") from e


def parse_canonical(encoded: bytes | str, strict: bool) -> dict[str, Any]:
    """An event's canonical JSON parsed: by orjson where the room version's canonical JSON is
    strict (v6 on: integers within 2**53, no floats), which it reads exactly, faster than
    json and sharing dict keys between events (an event kept in the engine's caches holds
    about a kilobyte less); by json in older versions, whose events may hold integers
    orjson would turn into floats, and for anything orjson refuses (a lone surrogate)."""
    if strict:
        try:
            return orjson.loads(encoded)  # type: ignore[no-any-return]
        except orjson.JSONDecodeError:
            pass
    return json.loads(encoded)  # type: ignore[no-any-return]


# The PDU's fields an Event keeps parsed only in its canonical bytes (see Event.fields).
_UNPARSED_FIELDS = ("hashes", "signatures")
_UNPARSED = frozenset(_UNPARSED_FIELDS)
# Fields whose values repeat across a room's events, shared through `_shared`.
_SHARED_FIELDS = ("room_id", "sender", "type", "state_key")
_SHARED_MAX = 4096
_shared: dict[str, str] = {}


def shared(value: str) -> str:
    """One string object for equal room ids, senders, event types, state keys and auth
    event ids across the events kept in memory (each about 60-90 bytes a copy, several
    an event). Bounded: when full it starts again (a string shared before stays shared
    by those that hold it). Not `sys.intern`, which keeps strings for ever on 3.12."""
    found = _shared.get(value)
    if found is not None:
        return found
    if len(_shared) >= _SHARED_MAX:
        _shared.clear()
    _shared[value] = value
    return value


def kept_fields(pdu: dict[str, Any]) -> dict[str, Any]:
    """What an Event keeps of a freshly parsed PDU: a new dict of all but hashes and
    signatures, with repeated strings shared (see `shared`).

    A new dict, not the parsed one with the two popped: a dict keeps the table it grew
    to, and the parsed PDU's 11 keys need one of 32 slots (632 bytes for a message);
    the 9 kept, inserted afresh, fit 16 (272 bytes). Events are held by the thousand
    (bench/memory.py, docs/benchmarks.md: engineer `memory`)."""
    if len(_shared) >= _SHARED_MAX:
        _shared.clear()
    share = _shared.setdefault
    kept = {key: value for key, value in pdu.items() if key not in _UNPARSED}
    for key in _SHARED_FIELDS:
        value = kept.get(key)
        if type(value) is str:
            kept[key] = share(value, value)
    auth = kept.get("auth_events")
    if type(auth) is list:  # v3+: ids (v1/v2 pairs are left as they are)
        kept["auth_events"] = [share(ref, ref) if type(ref) is str else ref for ref in auth]
    return kept


@dataclass(frozen=True, eq=False, slots=True)
class Event:
    """One PDU, validated, with its id and canonical bytes computed once.

    ``pdu`` excludes ``unsigned`` (kept apart in ``unsigned``): unsigned data is
    rewritten hop by hop and is neither hashed nor signed, so it is not part of
    what the event is. Treat ``fields``, ``pdu``, ``content`` and ``unsigned`` as
    read-only. Events compare equal and hash by event id.

    Kept parsed (``fields``) is the PDU without its hashes and signatures: those are
    read only to serve or check the whole PDU (federation, redaction), which ``pdu``
    parses again from the canonical bytes each time. Held by the thousands (the
    parsed-event cache, rooms' current state, recent sends), an event is about 1 KiB
    smaller without them (bench/memory.py, docs/benchmarks.md).
    """

    fields: dict[str, Any]
    version: RoomVersion
    event_id: str
    room_id: str
    canonical_bytes: bytes = field(repr=False)
    unsigned: dict[str, Any] = field(default_factory=dict, repr=False)
    # The client form of the event without `unsigned`, built once by its first reader
    # (client_api/event_format.py) and kept with it. The event never
    # changes, so neither does the form; redacted, the event is a new Event.
    client_form: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)
    # The same form encoded as JSON without its closing brace, with origin_server_ts, built
    # by the first reader of a big state list (event_format.client_events_json).
    client_json: tuple[bytes, int] | None = field(default=None, init=False, repr=False,
                                                  compare=False)

    @classmethod
    def from_pdu(cls, pdu: Mapping[str, Any], version: RoomVersion) -> Event:
        """Validate ``pdu`` as an event of ``version`` or raise EventFormatError."""
        return cls._validated(pdu, version, None)

    @classmethod
    def from_built(cls, pdu: Mapping[str, Any], version: RoomVersion, event_id: str,
                   walked: bool = False) -> Event:
        """Validate a PDU this server just built, whose id ``finalize_pdu`` computed.

        The same checks as ``from_pdu`` except recomputing the reference hash,
        which building already did: a local send then hashes its event once.
        ``walked``: ``finalize_pdu`` built it from a PDU without hashes or signatures,
        so canonical JSON's walk has seen all of it (hashing.canonical_json).
        """
        return cls._validated(pdu, version, event_id, walked)

    @classmethod
    def from_local_build(cls, pdu: Mapping[str, Any], version: RoomVersion,
                         event_id: str) -> Event:
        """``from_built`` for a PDU that ``builder.build_event_pdu`` laid out here and
        ``finalize_pdu`` finished from it (rooms/local_build.py), so canonical JSON's walk
        has seen all of it. Only the fields a send's request gave are checked (type, state
        key, sender, content, redacts) and the sizes: room id, graph fields, depth,
        timestamp, hashes and signatures are the builder's own, and checking them on every
        send (``_validate_format``: about forty calls) told nothing new. Not for a PDU any
        other server had a hand in (a make_join template: ``from_built``)."""
        return cls._validated(pdu, version, event_id, True, _validate_local)

    @classmethod
    def _validated(cls, pdu: Mapping[str, Any], version: RoomVersion, event_id: str | None,
                   walked: bool = False,
                   validate: Callable[[Mapping[str, Any], RoomVersion], None] | None = None,
                   ) -> Event:
        if not isinstance(pdu, Mapping):
            raise EventFormatError("M_BAD_JSON", "event is not an object")
        body = {key: value for key, value in pdu.items() if key != "unsigned"}
        try:
            # A PDU this server built (event_id given) was checked while it was hashed.
            # v1-v5 do not enforce canonical JSON's number rules (floats, big integers).
            encoded = canonical_json(
                body, checked=event_id is not None or not version.strict_canonical_json,
                walked=walked)
        except CanonicalJSONError as e:
            raise EventFormatError("M_BAD_JSON", str(e)) from e
        if len(encoded) > MAX_EVENT_BYTES:
            raise EventFormatError("M_TOO_LARGE", "event is larger than 65536 bytes")
        (validate or _validate_format)(body, version)
        if event_id is None:
            event_id = compute_event_id(body, version)
        is_hydra_create = version.hydra and body["type"] == "m.room.create"
        room_id = room_id_from_create_event_id(event_id) if is_hydra_create else body["room_id"]
        return cls(
            fields=kept_fields(parse_canonical(encoded, version.strict_canonical_json)),
            version=version,
            event_id=event_id,
            room_id=shared(room_id),
            canonical_bytes=encoded,
            unsigned=_copy_unsigned(pdu.get("unsigned")),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and other.event_id == self.event_id

    def __hash__(self) -> int:
        return hash(self.event_id)

    def __repr__(self) -> str:
        return f"<Event {self.event_id} {self.type} {self.state_key!r} from {self.sender}>"

    @property
    def pdu(self) -> dict[str, Any]:
        """The whole PDU (without ``unsigned``), parsed from the canonical bytes: a new
        dict on each call (see the class's docstring)."""
        return parse_canonical(self.canonical_bytes, self.version.strict_canonical_json)

    @property
    def type(self) -> str:
        return self.fields["type"]

    @property
    def state_key(self) -> str | None:
        """The state key, or None for a message (non-state) event."""
        return self.fields.get("state_key")

    @property
    def is_state(self) -> bool:
        return "state_key" in self.fields

    @property
    def sender(self) -> str:
        return self.fields["sender"]

    @property
    def content(self) -> dict[str, Any]:
        return self.fields["content"]

    @property
    def prev_event_ids(self) -> tuple[str, ...]:
        return _referenced_ids(self.fields["prev_events"], self.version)

    @property
    def auth_event_ids(self) -> tuple[str, ...]:
        return _referenced_ids(self.fields["auth_events"], self.version)

    @property
    def depth(self) -> int:
        return self.fields["depth"]

    @property
    def origin_server_ts(self) -> int:
        return self.fields["origin_server_ts"]

    @property
    def hashes(self) -> dict[str, str]:
        return self.pdu["hashes"]

    @property
    def signatures(self) -> dict[str, dict[str, str]]:
        return self.pdu["signatures"]

    @property
    def membership(self) -> str | None:
        """``content.membership`` of an m.room.member event, else None."""
        if self.type != "m.room.member":
            return None
        membership = self.content.get("membership")
        return membership if isinstance(membership, str) else None

    @property
    def redacts(self) -> str | None:
        """The event an m.room.redaction redacts: in content from v11, top level before."""
        if self.type != "m.room.redaction":
            return None
        source = self.content if self.version.updated_redaction_rules else self.fields
        redacts = source.get("redacts")
        return redacts if isinstance(redacts, str) else None

    def redacted(self) -> Event:
        """This event after redaction; its event id is unchanged by construction."""
        return Event.from_pdu(redact_pdu(self.pdu, self.version), self.version)


def _referenced_ids(references: list[Any], version: RoomVersion) -> tuple[str, ...]:
    """Event ids of prev_events/auth_events: v1/v2 list [id, hashes] pairs."""
    if version.reference_pairs:
        return tuple(pair[0] for pair in references)
    return tuple(references)


def _copy_unsigned(unsigned: object) -> dict[str, Any]:
    """A private copy of ``unsigned``; anything that is not a JSON object is dropped,
    since no check covers it and it must not make a valid event unusable."""
    if not isinstance(unsigned, Mapping):
        return {}
    try:
        return json.loads(json.dumps(unsigned))
    except (TypeError, ValueError):
        return {}


def _validate_format(body: Mapping[str, Any], version: RoomVersion) -> None:
    """Check the fields of the PDU schema for ``version`` (pdu_v4/v11/v12)."""
    _validate_type_sender_state_key(body)
    _validate_room_id(body, version)
    for key in ("content", "hashes", "signatures"):
        if not isinstance(body.get(key), Mapping):
            raise EventFormatError("M_BAD_JSON", f"{key} must be an object")
    if not isinstance(body["hashes"].get("sha256"), str):
        raise EventFormatError("M_BAD_JSON", "hashes.sha256 must be a string")
    for server_signatures in body["signatures"].values():
        if not isinstance(server_signatures, Mapping):
            raise EventFormatError("M_BAD_JSON", "signatures must map servers to objects")
    for key in ("depth", "origin_server_ts"):
        _require_int(body, key)
    _require_event_ids(body, "prev_events", MAX_PREV_EVENTS, version)
    _require_event_ids(body, "auth_events", MAX_AUTH_EVENTS, version)
    if version.event_id_in_pdu:
        _require_str(body, "event_id", limit=MAX_ID_BYTES)
        if not body["event_id"].startswith("$") or ":" not in body["event_id"]:
            raise EventFormatError("M_BAD_JSON", "event_id must look like $opaque:domain")
    _validate_redacts(body, version)


def _validate_type_sender_state_key(body: Mapping[str, Any]) -> None:
    """The fields every event's checks start with, whoever built it."""
    _require_str(body, "type", limit=MAX_ID_BYTES)
    _require_str(body, "sender", limit=MAX_ID_BYTES)
    if not is_valid_user_id(body["sender"]):
        raise EventFormatError("M_BAD_JSON", "sender is not a valid user id")
    if "state_key" in body:
        _require_str(body, "state_key", limit=MAX_ID_BYTES)


def _validate_local(body: Mapping[str, Any], version: RoomVersion) -> None:
    """What ``_validate_format`` checks of the fields a local build takes from its request
    (Event.from_local_build), and the counts of its prev and auth events (a room forked
    over federation may have more forward extremities than an event may cite)."""
    _validate_type_sender_state_key(body)
    if type(body.get("content")) is not dict:
        raise EventFormatError("M_BAD_JSON", "content must be an object")
    if len(body["prev_events"]) > MAX_PREV_EVENTS:
        raise EventFormatError("M_BAD_JSON", f"prev_events lists more than {MAX_PREV_EVENTS} events")
    if len(body["auth_events"]) > MAX_AUTH_EVENTS:
        raise EventFormatError("M_BAD_JSON", f"auth_events lists more than {MAX_AUTH_EVENTS} events")
    _validate_redacts(body, version)


def _validate_room_id(body: Mapping[str, Any], version: RoomVersion) -> None:
    """room_id is required, except on a v12 create event where it is derived.

    A v12 create event that carries a room_id anyway is well formed; auth rule
    1.2 rejects it, which is the spec's place for that.
    """
    if version.hydra and body.get("type") == "m.room.create":
        return
    _require_str(body, "room_id", limit=MAX_ID_BYTES)
    if not body["room_id"].startswith("!"):
        raise EventFormatError("M_BAD_JSON", "room_id must start with '!'")


def _validate_redacts(body: Mapping[str, Any], version: RoomVersion) -> None:
    """An m.room.redaction's ``redacts``, where present, must be an event id.

    It may be absent: a redacted v10 redaction loses its top-level redacts and
    must still be a valid event.
    """
    if body.get("type") != "m.room.redaction":
        return
    source = body["content"] if version.updated_redaction_rules else body
    if "redacts" in source:
        _require_str(source, "redacts", limit=MAX_ID_BYTES)


def _require_str(body: Mapping[str, Any], key: str, limit: int) -> None:
    value = body.get(key)
    if not isinstance(value, str):
        raise EventFormatError("M_BAD_JSON", f"{key} must be a string")
    if _utf8_len(value) > limit:
        raise EventFormatError("M_TOO_LARGE", f"{key} is longer than {limit} bytes")


def _require_int(body: Mapping[str, Any], key: str) -> None:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventFormatError("M_BAD_JSON", f"{key} must be an integer")
    if not CANONICAL_INT_MIN <= value <= CANONICAL_INT_MAX:
        raise EventFormatError("M_BAD_JSON", f"{key} is out of range")


def _require_event_ids(
    body: Mapping[str, Any], key: str, max_count: int, version: RoomVersion
) -> None:
    """A list of event ids; in v1/v2 of [event_id, {algorithm: hash}] pairs (pdu_v1)."""
    value = body.get(key)
    if not isinstance(value, list):
        raise EventFormatError("M_BAD_JSON", f"{key} must be a list")
    if len(value) > max_count:
        raise EventFormatError("M_BAD_JSON", f"{key} lists more than {max_count} events")
    if version.reference_pairs:
        for pair in value:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], Mapping)):
                raise EventFormatError("M_BAD_JSON", f"{key} must hold [event_id, hashes] pairs")
        value = [pair[0] for pair in value]
    for event_id in value:
        if not isinstance(event_id, str) or not event_id.startswith("$"):
            raise EventFormatError("M_BAD_JSON", f"{key} must hold event ids")
        if _utf8_len(event_id) > MAX_ID_BYTES:
            raise EventFormatError("M_TOO_LARGE", f"an event id in {key} is too long")
