"""Events as clients see them: the encoded state lists are the dicts `client_event` gives."""

from __future__ import annotations

import json
from typing import Any

from signedjson.key import generate_signing_key
from twisted.trial.unittest import TestCase

from roost.client_api.event_format import client_event, client_events_json
from roost.http.bodies import encode_json
from roost.rooms.builder import build_event_pdu, finalize_pdu
from roost.rooms.engine_types import LoadedEvent
from roost.rooms.events import Event
from roost.rooms.versions import KNOWN_ROOM_VERSIONS, RoomVersion

KEY = generate_signing_key("1")
ROOM = "!room:a.example"
NOW = 1_700_000_100_000


def _event(version: RoomVersion, event_type: str, content: dict[str, Any],
           state_key: str | None = None, ts: int = 1_700_000_000_000) -> Event:
    pdu = build_event_pdu(version, ROOM, "@alice:a.example", event_type, content, state_key,
                          prev_event_ids=["$prev"], auth_event_ids=["$auth"], depth=3,
                          origin_server_ts=ts)
    _, pdu = finalize_pdu(pdu, version, "a.example", KEY)
    return Event.from_pdu(pdu, version)


class EncodedStateListTests(TestCase):
    def test_the_encoded_list_is_the_served_dicts(self) -> None:
        v10 = KNOWN_ROOM_VERSIONS["10"]
        member = _event(v10, "m.room.member", {"membership": "join", "displayname": "Ålice \"A\""},
                        "@alice:a.example")
        topic = _event(v10, "m.room.topic", {"topic": "x"}, "", ts=NOW + 5)  # age never < 0
        redacted = _event(v10, "m.room.name", {"name": "secret"}, "")
        redaction = _event(v10, "m.room.redaction", {"reason": "no"})
        events = [LoadedEvent(member, 4, None, False), LoadedEvent(topic, 5, None, False),
                  LoadedEvent(redacted, 6, redaction.event_id, False),
                  # a redaction not found: served unredacted, as `serialize` does
                  LoadedEvent(_event(v10, "m.room.avatar", {"url": "mxc://a/b"}, ""), 7,
                              "$gone", False)]
        served_redaction = client_event(LoadedEvent(redaction, 8, None, False), NOW)
        expected = [client_event(e, NOW, served_redaction if e.redacted_by ==
                                 redaction.event_id else None) for e in events]
        for _ in range(2):  # the second time from each event's kept encoding
            encoded = client_events_json(events, NOW, {redaction.event_id: served_redaction})
            assert encoded is not None
            self.assertEqual(json.loads(encoded.raw), expected)
            self.assertEqual(json.loads(encode_json({"chunk": encoded})), {"chunk": expected})
        self.assertEqual(expected[2]["content"], {})
        self.assertEqual(expected[1]["unsigned"], {"age": 0})
        self.assertEqual(json.loads(client_events_json([], NOW, {}).raw), [])  # type: ignore[union-attr]

    def test_events_with_relations_carry_them(self) -> None:
        v10 = KNOWN_ROOM_VERSIONS["10"]
        events = [LoadedEvent(_event(v10, "m.room.message", {"body": str(i)}), i, None, False)
                  for i in range(3)]
        relations = {events[1].event.event_id: {"m.annotation": {"chunk": [
            {"type": "m.reaction", "key": "👍", "count": 2}]}}}
        encoded = client_events_json(events, NOW, {}, relations)
        assert encoded is not None
        self.assertEqual(json.loads(encoded.raw), [
            client_event(e, NOW, None, relations.get(e.event.event_id)) for e in events])
        self.assertIn("m.relations", json.loads(encoded.raw)[1]["unsigned"])

    def test_what_orjson_cannot_write_is_left_to_the_dicts(self) -> None:
        v5 = KNOWN_ROOM_VERSIONS["5"]  # rooms before v6 may hold integers past 64 bits
        pdu = dict(_event(v5, "m.room.topic", {"topic": "x"}, "").pdu)
        pdu["content"] = {"topic": "x", "n": 2**70}  # (hashes are not checked here)
        big = Event.from_pdu(pdu, v5)
        self.assertIsNone(client_events_json([LoadedEvent(big, 1, None, False)], NOW, {}))

    def test_an_answer_holding_raw_json_falls_back_to_json_whole(self) -> None:
        v10 = KNOWN_ROOM_VERSIONS["10"]
        encoded = client_events_json(
            [LoadedEvent(_event(v10, "m.room.topic", {"topic": "t"}, ""), 1, None, False)],
            NOW, {})
        body = {"big": 2**70, "state": encoded, 3: "non-string key"}
        decoded = json.loads(encode_json(body))
        self.assertEqual(decoded["big"], 2**70)
        self.assertEqual(decoded["state"][0]["content"], {"topic": "t"})
        self.assertEqual(decoded["3"], "non-string key")
