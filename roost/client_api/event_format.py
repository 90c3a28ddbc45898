"""Events as clients see them (the spec's ClientEvent format)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from roost.http.bodies import RawJson
from roost.rooms.engine import LoadedEvent
from roost.rooms.events import Event
from roost.rooms.redaction import redact_pdu

JsonDict = dict[str, Any]


def client_event(
    loaded: LoadedEvent,
    now_ms: int,
    redaction: JsonDict | None = None,
    relations: JsonDict | None = None,
    transaction_id: str | None = None,
) -> JsonDict:
    """Serialize one event; `redaction` is the serialized redacting event, if any.

    Everything but `unsigned` is the same on every request, so it is built once per
    event and kept with it (`Event.client_form`); each answer gets its own copy (callers
    add to it). /members and an initial sync of a 2,000-member room serve 2,000 state
    events per request (bench/big_room.py).
    """
    event = loaded.event
    if redaction is None:
        body = _client_form(event).copy()
    else:
        body = _fixed_fields(event, redact_pdu(event.fields, event.version))
    age = now_ms - body["origin_server_ts"]
    unsigned: JsonDict = {"age": age if age > 0 else 0}
    if redaction is not None:
        unsigned["redacted_because"] = redaction
    if relations:
        unsigned["m.relations"] = relations
    if transaction_id is not None:
        unsigned["transaction_id"] = transaction_id
    body["unsigned"] = unsigned
    return body


def client_events_json(events: list[LoadedEvent], now_ms: int,
                       redactions: Mapping[str, JsonDict],
                       relations: Mapping[str, JsonDict] | None = None) -> RawJson | None:
    """The same list as `client_event` gives for each event (`redactions`: redaction id ->
    its served form; `relations`: event id -> its aggregated relations), encoded: a JSON
    array written into the answer as it is.

    For big lists of state events (/members, /state, an initial sync's `state`): each
    event's fixed part is encoded once and kept with it (`Event.client_json`, the
    object without its closing brace, and its timestamp), so an answer only appends each
    event's age.
    Building and encoding 2,002 member dicts per request was most of /members' CPU
    (bench/big_room.py). None when an event cannot be written by orjson (integers past
    64 bits in rooms v1-v5): the caller serves dicts then.
    """
    try:
        forms = [e.event.client_json or _encoded_form(e.event) for e in events]
        if redactions or relations:
            parts = [_one_json(loaded, fixed, ts, now_ms, redactions, relations or {})
                     for loaded, (fixed, ts) in zip(events, forms, strict=True)]
        else:  # (the common case, in one comprehension: ~1 µs an event of a big room)
            parts = [b'%b,"unsigned":{"age":%d}}' % (fixed, now_ms - ts if ts < now_ms else 0)
                     for fixed, ts in forms]
    except orjson.JSONEncodeError:
        return None
    if not parts:
        return RawJson(b"[]")
    # The brackets go on the end parts: one join, not two more copies of ~1 MB.
    parts[0] = b"[" + parts[0]
    parts[-1] += b"]"
    return RawJson(b",".join(parts))


class EncodedEvents(NamedTuple):
    """A list of unredacted events as client_events_json encodes it, kept whole: the array
    with a `%d` where each event's age goes (any other `%` doubled), and the events'
    timestamps. An answer is one `%` formatting of the kept bytes: the events themselves
    are not visited again (a big room's /members, bench/big_room.py)."""

    template: bytes
    timestamps: list[int]

    def render(self, now_ms: int) -> RawJson:
        """The array as client_events_json gives it at `now_ms` (the same bytes)."""
        return RawJson(self.template % tuple([now_ms - ts if ts < now_ms else 0
                                              for ts in self.timestamps]))


def encode_events(events: list[LoadedEvent]) -> EncodedEvents | None:
    """`events` kept encoded (EncodedEvents), or None when one is redacted (its form holds
    its redaction's age) or cannot be written by orjson: the caller serves them as usual."""
    if any(e.redacted_by for e in events):
        return None
    try:
        forms = [e.event.client_json or _encoded_form(e.event) for e in events]
    except orjson.JSONEncodeError:
        return None
    segments = [fixed.replace(b"%", b"%%") + b',"unsigned":{"age":%d}}' for fixed, _ in forms]
    return EncodedEvents(b"[" + b",".join(segments) + b"]", [ts for _, ts in forms])


def _encoded_form(event: Event) -> tuple[bytes, int]:
    """The event's client form without `unsigned`, encoded without its closing brace, and
    its origin_server_ts; kept with the event (`Event.client_json`)."""
    form = (orjson.dumps(_fixed_fields(event, event.fields))[:-1], event.origin_server_ts)
    object.__setattr__(event, "client_json", form)  # a frozen Event keeps its form
    return form


def _one_json(loaded: LoadedEvent, fixed: bytes, ts: int, now_ms: int,
              redactions: Mapping[str, JsonDict], relations: Mapping[str, JsonDict]) -> bytes:
    redaction = redactions.get(loaded.redacted_by) if loaded.redacted_by else None
    related = relations.get(loaded.event.event_id)
    if redaction is not None or related:
        return orjson.dumps(client_event(loaded, now_ms, redaction, related))
    return b'%b,"unsigned":{"age":%d}}' % (fixed, now_ms - ts if ts < now_ms else 0)


def _client_form(event: Event) -> JsonDict:
    base = event.client_form
    if base is None:
        base = _fixed_fields(event, event.fields)
        object.__setattr__(event, "client_form", base)  # a frozen Event keeps its form
    return base


def _fixed_fields(event: Event, pdu: JsonDict) -> JsonDict:
    """The client form's fields other than `unsigned` (from `pdu`, the event's fields,
    redacted or not: a client form has no hashes or signatures)."""
    body: JsonDict = {
        "content": pdu.get("content", {}),
        "event_id": event.event_id,
        "origin_server_ts": event.origin_server_ts,
        "room_id": event.room_id,
        "sender": event.sender,
        "type": event.type,
    }
    if event.state_key is not None:
        body["state_key"] = event.state_key
    if event.type == "m.room.redaction" and event.redacts is not None:
        body["redacts"] = event.redacts
    return body


def stripped_state(event: Event) -> JsonDict:
    """The stripped form used for invite state and the public room directory."""
    return {"type": event.type, "state_key": event.state_key or "", "sender": event.sender,
            "content": event.content}
