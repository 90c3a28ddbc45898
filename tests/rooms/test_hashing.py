"""Canonical JSON, content and reference hashes, event signing: spec test vectors first."""

import base64
import copy
import enum
import random
import sys
import tracemalloc
from collections import OrderedDict
from typing import Any

from canonicaljson import encode_canonical_json
from signedjson.key import decode_signing_key_base64, generate_signing_key, get_verify_key
from twisted.trial.unittest import TestCase
from unpaddedbase64 import encode_base64

from roost.rooms.builder import finalize_pdu
from roost.rooms.events import Event
from roost.rooms.hashing import (
    CanonicalJSONError,
    SignatureVerifyError,
    add_content_hash,
    canonical_json,
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    servers_that_must_sign,
    sign_event,
    signed_by_any_public_key,
    verify_event_signature,
)
from roost.rooms.redaction import redact_pdu
from roost.rooms.versions import KNOWN_ROOM_VERSIONS

V10 = KNOWN_ROOM_VERSIONS["10"]
V11 = KNOWN_ROOM_VERSIONS["11"]
V12 = KNOWN_ROOM_VERSIONS["12"]
ALL_VERSIONS = (V10, V11, V12)

# Appendices, "Cryptographic Test Vectors".
SPEC_KEY = decode_signing_key_base64("ed25519", "1", "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")


def message_pdu() -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "room_id": "!r:a.example",
        "sender": "@u:a.example",
        "content": {"body": "hello", "msgtype": "m.text"},
        "prev_events": ["$prev"],
        "auth_events": ["$auth"],
        "depth": 4,
        "origin_server_ts": 1700000000000,
    }


class CanonicalJSONTests(TestCase):
    """Appendices, "Canonical JSON" examples, plus the number rules."""

    def test_spec_examples(self) -> None:
        cases = [
            ({}, b"{}"),
            ({"one": 1, "two": "Two"}, b'{"one":1,"two":"Two"}'),
            ({"b": "2", "a": "1"}, b'{"a":"1","b":"2"}'),
            (
                {
                    "auth": {
                        "success": True,
                        "mxid": "@john.doe:example.com",
                        "profile": {
                            "display_name": "John Doe",
                            "three_pids": [
                                {"medium": "email", "address": "john.doe@example.org"},
                                {"medium": "msisdn", "address": "123456789"},
                            ],
                        },
                    }
                },
                b'{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
                b'"three_pids":[{"address":"john.doe@example.org","medium":"email"},'
                b'{"address":"123456789","medium":"msisdn"}]},"success":true}}',
            ),
            ({"a": "日本語"}, '{"a":"日本語"}'.encode()),
            ({"本": 2, "日": 1}, '{"日":1,"本":2}'.encode()),
            ({"a": "\u65e5"}, '{"a":"日"}'.encode()),
            ({"a": None}, b'{"a":null}'),
            ({"a": -0}, b'{"a":0}'),
        ]
        for value, expected in cases:
            self.assertEqual(canonical_json(value), expected)

    def test_control_characters_use_the_grammars_escapes(self) -> None:
        self.assertEqual(
            canonical_json({"a": '\n\t\x00\x1f"\\'}), b'{"a":"\\n\\t\\u0000\\u001f\\"\\\\"}'
        )

    def test_integers_at_the_range_limits_are_allowed(self) -> None:
        self.assertEqual(
            canonical_json([2**53 - 1, -(2**53) + 1]), b"[9007199254740991,-9007199254740991]"
        )

    def test_integers_beyond_the_range_are_refused(self) -> None:
        for value in (2**53, -(2**53), {"deep": [{"n": 2**64}]}):
            self.assertRaises(CanonicalJSONError, canonical_json, value)

    def test_floats_are_refused_even_integral_ones(self) -> None:
        for value in (1.5, {"a": 1e10}, [0.0], float("nan")):
            self.assertRaises(CanonicalJSONError, canonical_json, value)

    def test_non_json_values_and_keys_are_refused(self) -> None:
        for value in ({1: "a"}, {"a": b"bytes"}, {"a": {1, 2}}, {"a": "\ud800"}):
            self.assertRaises(CanonicalJSONError, canonical_json, value)

    def test_booleans_are_not_mistaken_for_integers(self) -> None:
        self.assertEqual(canonical_json([True, False]), b"[true,false]")

    def test_subclasses_and_other_containers_are_still_checked(self) -> None:
        class Level(enum.IntEnum):
            LOW = 1
            HUGE = 2**53

        class Name(str):
            pass

        refused = [OrderedDict(a=1.5), {"a": (1, 2.5)}, [Level.HUGE], {Name("k"): [{"x": 0.5}]},
                   OrderedDict([(1, "a")]), {True: "a"}, [b"x"], {"a": {1.5: "b"}}]
        for value in refused:
            self.assertRaises(CanonicalJSONError, canonical_json, value)
        for value in ([Level.LOW], {Name("k"): Name("v")}, OrderedDict(a=(1, [True, None]))):
            self.assertEqual(canonical_json(value), encode_canonical_json(value))

    def test_the_walk_agrees_with_an_isinstance_walk(self) -> None:
        rng = random.Random(7)
        poisons = [1.5, 2**53, -(2**53), {1: "a"}, b"x", {2.5}, float("nan")]
        for _ in range(2000):
            value = [random_json(rng)]
            if rng.random() < 0.5:
                _plant(rng, value, rng.choice(poisons))
            try:
                _isinstance_walk(value)
                expected = None
            except CanonicalJSONError as e:
                expected = type(e)
            try:
                canonical_json(value)
                got = None
            except CanonicalJSONError as e:
                got = type(e)
            self.assertEqual(got, expected, value)

    def test_a_plain_value_is_walked_without_isinstance(self) -> None:
        """The walk tells the plain JSON types apart by their exact type: isinstance (and
        the ABC machinery behind isinstance(x, Mapping)) ran ~60 times per local send."""
        calls: list[str] = []

        def count(frame: Any, event: str, arg: Any) -> None:
            if event == "c_call" and getattr(arg, "__name__", "") == "isinstance":
                calls.append("isinstance")

        pdu = {**message_pdu(), "content": {"body": "hi", "n": [1, {"a": None, "b": True}]}}
        sys.setprofile(count)
        try:
            canonical_json(pdu)
        finally:
            sys.setprofile(None)
        self.assertEqual(calls, [])


def _plant(rng: random.Random, value: Any, poison: Any) -> None:
    """Put `poison` somewhere inside `value` (a list), in a list or an object."""
    target = value
    while True:
        inner = [v for v in (target.values() if isinstance(target, dict) else target)
                 if isinstance(v, dict | list)]
        if not inner or rng.random() < 0.4:
            break
        target = rng.choice(inner)
    if isinstance(target, dict):
        target[random_string(rng) if not isinstance(poison, dict) else "k"] = poison
    else:
        target.append(poison)


def _isinstance_walk(value: object) -> None:
    """The walk as it was written before exact types were told apart (the reference)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        if isinstance(item, int):
            if not -(2**53) + 1 <= item <= 2**53 - 1:
                raise CanonicalJSONError("range")
        elif isinstance(item, float):
            raise CanonicalJSONError("float")
        elif isinstance(item, dict | OrderedDict):
            for key in item:
                if not isinstance(key, str):
                    raise CanonicalJSONError("key")
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        else:
            raise CanonicalJSONError("type")


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A value canonical JSON's walk passes: strings drawn from every plane (control
    characters, quotes, backslashes, U+2028, DEL, astral), in-range integers, booleans,
    nulls, lists, tuples and string-keyed objects, nested a few levels."""
    kind = rng.randrange(9 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**53 - 1, -(2**53) + 1, rng.randrange(-(2**53) + 1, 2**53)])
    if kind in (2, 3, 4):
        return random_string(rng)
    if kind in (5, 6):
        return {random_string(rng): random_json(rng, depth + 1) for _ in range(rng.randrange(6))}
    items = [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    return tuple(items) if kind == 7 else items


def random_string(rng: random.Random) -> str:
    pools = ["\x00\x01\x08\t\n\x0b\x0c\r\x1f \"\\/\x7f\x80", "abcAB09_-.:@!$",
             "\u00e9\u2028\u2029\ufeff\uffff\u65e5\u672c", "\U0001f600\U0010ffff\U00020000"]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randrange(8)))


class CanonicalEncodersAgreeTests(TestCase):
    """A walked value is written by orjson (fast), anything else by canonicaljson: for
    every value the walk passes, both give the same bytes."""

    def test_orjson_writes_walked_values_as_canonicaljson_does(self) -> None:
        rng = random.Random(20261204)
        for _ in range(3000):
            value = {random_string(rng): random_json(rng) for _ in range(rng.randrange(1, 8))}
            expected = encode_canonical_json(value)
            self.assertEqual(canonical_json(value), expected, value)
            self.assertEqual(canonical_json(value, checked=True, walked=True), expected, value)

    def test_subclasses_and_ordered_objects_come_out_the_same(self) -> None:
        class Name(str):
            pass

        class Level(enum.IntEnum):
            HIGH = 100

        value = {"b": OrderedDict([("z", 1), ("a", Name("x"))]), "a": [Level.HIGH, (1, "2")],
                 Name("c"): {"n": True}}
        self.assertEqual(canonical_json(value), encode_canonical_json(value))

    def test_nesting_past_orjsons_limit_is_written_by_canonicaljson(self) -> None:
        value: Any = "leaf"
        for _ in range(400):
            value = {"k": [value]}
        self.assertEqual(canonical_json(value), encode_canonical_json(value))

    def test_values_not_walked_keep_canonicaljsons_float_notation(self) -> None:
        # v1-v5 events may carry floats (their hashes are over json's notation).
        value = {"a": 1e16, "b": 1.5e-05, "c": 0.1}
        self.assertEqual(canonical_json(value, checked=True), b'{"a":1e+16,"b":1.5e-05,"c":0.1}')
        pdu = {**message_pdu(), "hashes": {"other": 1.5e-05}}  # orjson: 0.000015
        signed = finalize_pdu(pdu, V10, "a.example", SPEC_KEY)[1]
        message = {k: v for k, v in redact_pdu(signed, V10).items()
                   if k not in ("signatures", "unsigned")}
        verify = get_verify_key(SPEC_KEY)
        verify.verify(encode_canonical_json(message),
                      base64.b64decode(signed["signatures"]["a.example"]["ed25519:1"] + "=="))

    def test_the_bytes_kept_are_no_larger_than_the_encoding(self) -> None:
        # An event keeps its canonical bytes (the caches hold a thousand): orjson's own
        # result holds a 4 KiB buffer for a few hundred bytes.
        value = {**message_pdu(), "hashes": {"sha256": "x" * 43}}
        tracemalloc.start()
        try:
            kept = [canonical_json(value) for _ in range(200)]
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(held, 2 * sum(len(b) for b in kept) + 200 * 64)

    def test_a_built_event_is_what_canonicaljson_would_make_of_it(self) -> None:
        for version in ALL_VERSIONS:
            pdu = message_pdu()
            pdu["content"] = {"body": "h\u00e9llo \U0001f600 \n\x00", "n": 2**53 - 1,
                              "list": [True, None, {"z": "", "a": -1}]}
            event_id, signed = finalize_pdu(pdu, version, "a.example", SPEC_KEY)
            event = Event.from_built(signed, version, event_id, walked=True)
            self.assertEqual(event.canonical_bytes, encode_canonical_json(signed))
            self.assertEqual(event_id, compute_event_id(signed, version))
            self.assertTrue(check_content_hash(signed))
            verify_event_signature(signed, version, "a.example", get_verify_key(SPEC_KEY))


class SpecJSONSigningVectorTests(TestCase):
    """Appendices, "JSON Signing": the test key signing canonical JSON."""

    def test_empty_object(self) -> None:
        signature = encode_base64(SPEC_KEY.sign(canonical_json({})).signature)
        self.assertEqual(
            signature,
            "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ",
        )

    def test_object_with_data(self) -> None:
        signature = encode_base64(SPEC_KEY.sign(canonical_json({"one": 1, "two": "Two"})).signature)
        self.assertEqual(
            signature,
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw",
        )


class SpecEventSigningVectorTests(TestCase):
    """Appendices, "Event Signing". The vectors keep ``origin`` through redaction,
    so they hold for the v10 redaction rules (v11 stopped protecting origin)."""

    def test_minimal_event(self) -> None:
        event = {
            "room_id": "!x:domain",
            "sender": "@a:domain",
            "origin": "domain",
            "origin_server_ts": 1000000,
            "signatures": {},
            "hashes": {},
            "type": "X",
            "content": {},
            "prev_events": [],
            "auth_events": [],
            "depth": 3,
            "unsigned": {"age_ts": 1000000},
        }
        signed = sign_event(add_content_hash(event), V10, "domain", SPEC_KEY)
        self.assertEqual(
            signed,
            {
                "auth_events": [],
                "content": {},
                "depth": 3,
                "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
                "origin": "domain",
                "origin_server_ts": 1000000,
                "prev_events": [],
                "room_id": "!x:domain",
                "sender": "@a:domain",
                "signatures": {
                    "domain": {
                        "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
                    }
                },
                "type": "X",
                "unsigned": {"age_ts": 1000000},
            },
        )

    def test_event_with_redactable_content(self) -> None:
        event = {
            "content": {"body": "Here is the message content"},
            "event_id": "$0:domain",
            "origin": "domain",
            "origin_server_ts": 1000000,
            "type": "m.room.message",
            "room_id": "!r:domain",
            "sender": "@u:domain",
            "signatures": {},
            "unsigned": {"age_ts": 1000000},
        }
        signed = sign_event(add_content_hash(event), V10, "domain", SPEC_KEY)
        self.assertEqual(
            signed,
            {
                "content": {"body": "Here is the message content"},
                "event_id": "$0:domain",
                "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
                "origin": "domain",
                "origin_server_ts": 1000000,
                "type": "m.room.message",
                "room_id": "!r:domain",
                "sender": "@u:domain",
                "signatures": {
                    "domain": {
                        "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
                    }
                },
                "unsigned": {"age_ts": 1000000},
            },
        )

    def test_spec_signature_verifies_with_the_test_key(self) -> None:
        event = {
            "content": {"body": "Here is the message content"},
            "event_id": "$0:domain",
            "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
            "origin": "domain",
            "origin_server_ts": 1000000,
            "type": "m.room.message",
            "room_id": "!r:domain",
            "sender": "@u:domain",
            "signatures": {
                "domain": {
                    "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
                }
            },
        }
        verify_event_signature(event, V10, "domain", get_verify_key(SPEC_KEY))
        self.assertTrue(check_content_hash(event))


class ContentHashTests(TestCase):
    def test_ignores_unsigned_signatures_and_existing_hashes(self) -> None:
        plain = message_pdu()
        decorated = dict(plain, unsigned={"age": 1}, signatures={"x": {}}, hashes={"sha256": "old"})
        self.assertEqual(compute_content_hash(plain), compute_content_hash(decorated))

    def test_covers_redactable_content(self) -> None:
        changed = message_pdu()
        changed["content"] = {"body": "goodbye"}
        self.assertNotEqual(compute_content_hash(message_pdu()), compute_content_hash(changed))

    def test_add_content_hash_returns_a_copy_and_keeps_other_hashes(self) -> None:
        original = dict(message_pdu(), hashes={"sha512": "other"})
        snapshot = copy.deepcopy(original)
        hashed = add_content_hash(original)
        self.assertEqual(original, snapshot)
        self.assertEqual(hashed["hashes"]["sha512"], "other")
        self.assertEqual(hashed["hashes"]["sha256"], encode_base64(compute_content_hash(original)))

    def test_check_passes_for_the_intact_event(self) -> None:
        self.assertTrue(check_content_hash(add_content_hash(message_pdu())))

    def test_check_fails_for_a_tampered_or_redacted_event(self) -> None:
        hashed = add_content_hash(message_pdu())
        tampered = copy.deepcopy(hashed)
        tampered["content"]["body"] = "evil"
        self.assertFalse(check_content_hash(tampered))
        self.assertFalse(check_content_hash(redact_pdu(hashed, V11)))

    def test_check_fails_without_a_usable_claim(self) -> None:
        pdu = message_pdu()
        for hashes in (None, "abc", {}, {"sha256": 5}):
            self.assertFalse(check_content_hash(dict(pdu, hashes=hashes)))

    def test_check_refuses_a_padded_encoding_of_the_right_hash(self) -> None:
        pdu = message_pdu()
        padded = encode_base64(compute_content_hash(pdu)) + "="
        self.assertFalse(check_content_hash(dict(pdu, hashes={"sha256": padded})))


class ReferenceHashAndEventIdTests(TestCase):
    def test_event_id_is_dollar_and_url_safe_unpadded_base64_of_the_reference_hash(self) -> None:
        for version in ALL_VERSIONS:
            pdu = add_content_hash(message_pdu())
            event_id = compute_event_id(pdu, version)
            expected = "$" + encode_base64(compute_reference_hash(pdu, version), urlsafe=True)
            self.assertEqual(event_id, expected)
            self.assertEqual(len(event_id), 44)
            self.assertFalse({"+", "/", "="} & set(event_id))

    def test_signatures_and_unsigned_do_not_change_the_event_id(self) -> None:
        pdu = add_content_hash(message_pdu())
        signed = sign_event(pdu, V11, "a.example", SPEC_KEY)
        signed["unsigned"] = {"age": 99}
        self.assertEqual(compute_event_id(pdu, V11), compute_event_id(signed, V11))

    def test_redaction_does_not_change_the_event_id(self) -> None:
        for version in ALL_VERSIONS:
            pdu = add_content_hash(message_pdu())
            self.assertEqual(
                compute_event_id(pdu, version), compute_event_id(redact_pdu(pdu, version), version)
            )

    def test_content_changes_the_event_id_through_the_content_hash(self) -> None:
        one = add_content_hash(message_pdu())
        other = message_pdu()
        other["content"]["body"] = "another"
        self.assertNotEqual(
            compute_event_id(one, V11), compute_event_id(add_content_hash(other), V11)
        )

    def test_origin_counts_towards_v10_ids_only(self) -> None:
        pdu = add_content_hash(message_pdu())
        with_origin = dict(pdu, origin="a.example")
        self.assertNotEqual(compute_event_id(pdu, V10), compute_event_id(with_origin, V10))
        self.assertEqual(compute_event_id(pdu, V11), compute_event_id(with_origin, V11))


class SignatureTests(TestCase):
    def setUp(self) -> None:
        self.key = generate_signing_key("abc")
        self.pdu = add_content_hash(message_pdu())

    def test_a_signed_event_verifies_in_every_version(self) -> None:
        for version in ALL_VERSIONS:
            signed = sign_event(self.pdu, version, "a.example", self.key)
            self.assertIn("ed25519:abc", signed["signatures"]["a.example"])
            verify_event_signature(signed, version, "a.example", get_verify_key(self.key))

    def test_signature_still_verifies_after_redaction(self) -> None:
        signed = sign_event(self.pdu, V11, "a.example", self.key)
        verify_event_signature(redact_pdu(signed, V11), V11, "a.example", get_verify_key(self.key))

    def test_signing_keeps_other_servers_signatures(self) -> None:
        other = generate_signing_key("x")
        first = sign_event(self.pdu, V11, "b.example", other)
        both = sign_event(first, V11, "a.example", self.key)
        verify_event_signature(both, V11, "b.example", get_verify_key(other))
        verify_event_signature(both, V11, "a.example", get_verify_key(self.key))

    def test_sign_event_does_not_modify_its_input(self) -> None:
        snapshot = copy.deepcopy(self.pdu)
        sign_event(self.pdu, V11, "a.example", self.key)
        self.assertEqual(self.pdu, snapshot)

    def test_tampering_with_a_protected_field_breaks_the_signature(self) -> None:
        signed = sign_event(self.pdu, V11, "a.example", self.key)
        signed["sender"] = "@mallory:a.example"
        self.assertRaises(
            SignatureVerifyError,
            verify_event_signature, signed, V11, "a.example", get_verify_key(self.key),
        )  # fmt: skip

    def test_changing_content_breaks_the_signature_through_the_hash(self) -> None:
        signed = sign_event(self.pdu, V11, "a.example", self.key)
        signed["hashes"]["sha256"] = encode_base64(b"\x00" * 32)
        self.assertRaises(
            SignatureVerifyError,
            verify_event_signature, signed, V11, "a.example", get_verify_key(self.key),
        )  # fmt: skip

    def test_missing_server_key_or_garbled_signature_fails(self) -> None:
        signed = sign_event(self.pdu, V11, "a.example", self.key)
        verify_key = get_verify_key(self.key)
        self.assertRaises(
            SignatureVerifyError, verify_event_signature, signed, V11, "b.example", verify_key
        )
        wrong_key = get_verify_key(generate_signing_key("other"))
        self.assertRaises(
            SignatureVerifyError, verify_event_signature, signed, V11, "a.example", wrong_key
        )
        signed["signatures"]["a.example"]["ed25519:abc"] = "!!not base64!!"
        self.assertRaises(
            SignatureVerifyError, verify_event_signature, signed, V11, "a.example", verify_key
        )

    def test_key_of_the_same_id_but_other_bytes_fails(self) -> None:
        signed = sign_event(self.pdu, V11, "a.example", self.key)
        impostor = get_verify_key(generate_signing_key("abc"))
        self.assertRaises(
            SignatureVerifyError, verify_event_signature, signed, V11, "a.example", impostor
        )

    def test_a_v10_signature_does_not_verify_under_v11_rules_when_origin_is_set(self) -> None:
        with_origin = dict(self.pdu, origin="a.example")
        signed = sign_event(with_origin, V10, "a.example", self.key)
        self.assertRaises(
            SignatureVerifyError,
            verify_event_signature, signed, V11, "a.example", get_verify_key(self.key),
        )  # fmt: skip


class ServersThatMustSignTests(TestCase):
    def test_ordinary_event_needs_the_senders_server(self) -> None:
        for version in ALL_VERSIONS:
            self.assertEqual(servers_that_must_sign(message_pdu(), version), {"a.example"})

    def test_restricted_join_also_needs_the_authorising_server(self) -> None:
        pdu = dict(
            message_pdu(),
            type="m.room.member",
            state_key="@u:a.example",
            content={"membership": "join", "join_authorised_via_users_server": "@admin:b.example"},
        )
        for version in ALL_VERSIONS:
            self.assertEqual(servers_that_must_sign(pdu, version), {"a.example", "b.example"})

    def test_authorising_key_on_other_memberships_needs_no_extra_signature(self) -> None:
        pdu = dict(
            message_pdu(),
            type="m.room.member",
            state_key="@u:a.example",
            content={"membership": "leave", "join_authorised_via_users_server": "@admin:b.example"},
        )
        self.assertEqual(servers_that_must_sign(pdu, V11), {"a.example"})

    def test_third_party_invite_needs_no_sender_signature(self) -> None:
        pdu = dict(
            message_pdu(),
            type="m.room.member",
            state_key="@invitee:c.example",
            content={"membership": "invite", "third_party_invite": {"signed": {}}},
        )
        self.assertEqual(servers_that_must_sign(pdu, V11), set())

    def test_plain_invite_needs_the_senders_server(self) -> None:
        pdu = dict(
            message_pdu(),
            type="m.room.member",
            state_key="@invitee:c.example",
            content={"membership": "invite"},
        )
        self.assertEqual(servers_that_must_sign(pdu, V12), {"a.example"})


class ThirdPartySignedTests(TestCase):
    def setUp(self) -> None:
        self.key = generate_signing_key("0")
        self.public_key = encode_base64(get_verify_key(self.key).encode())
        self.signed: dict[str, Any] = {
            "mxid": "@i:c.example",
            "token": "tok",
            "sender": "@u:a.example",
        }
        signature = encode_base64(self.key.sign(canonical_json(self.signed)).signature)
        self.signed["signatures"] = {"id.example": {"ed25519:0": signature}}

    def test_signature_matching_any_listed_key_passes(self) -> None:
        other = encode_base64(get_verify_key(generate_signing_key("1")).encode())
        self.assertTrue(signed_by_any_public_key(self.signed, [other, self.public_key]))

    def test_url_safe_encoded_key_is_accepted(self) -> None:
        urlsafe = encode_base64(get_verify_key(self.key).encode(), urlsafe=True)
        self.assertTrue(signed_by_any_public_key(self.signed, [urlsafe]))

    def test_no_matching_key_fails(self) -> None:
        other = encode_base64(get_verify_key(generate_signing_key("1")).encode())
        self.assertFalse(signed_by_any_public_key(self.signed, [other]))
        self.assertFalse(signed_by_any_public_key(self.signed, []))
        self.assertFalse(signed_by_any_public_key(self.signed, ["not a key"]))

    def test_altered_signed_block_fails(self) -> None:
        altered = dict(self.signed, mxid="@other:c.example")
        self.assertFalse(signed_by_any_public_key(altered, [self.public_key]))

    def test_unsigned_block_fails(self) -> None:
        unsigned = {k: v for k, v in self.signed.items() if k != "signatures"}
        self.assertFalse(signed_by_any_public_key(unsigned, [self.public_key]))
