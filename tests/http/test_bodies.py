"""JSON bodies in (NaN refused, M_NOT_JSON / M_BAD_JSON), typed query arguments."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.trial.unittest import TestCase

from roost.http.bodies import QueryArgs, encode_json, json_object, parse_json
from roost.http.errors import MatrixError


@dataclass
class _Http:
    args: dict[bytes, list[bytes]]


@dataclass
class _Request(QueryArgs):
    http: Any


class BodyTests(TestCase):
    def test_json_is_parsed_and_not_json_is_m_not_json(self) -> None:
        self.assertEqual(parse_json(b'{"a": [1, "x"]}'), {"a": [1, "x"]})
        for raw in (b"{", b"NaN", b'{"a": Infinity}', b"\xff"):
            with self.assertRaises(MatrixError) as caught:
                parse_json(raw)
            self.assertEqual((caught.exception.status, caught.exception.errcode),
                             (400, "M_NOT_JSON"), raw)

    def test_answers_are_compact_utf8_json_whatever_their_depth_or_keys(self) -> None:
        self.assertEqual(encode_json({"a": [1, (2, 3)], "é": "ü", 4: None}),
                         '{"a":[1,[2,3]],"é":"ü","4":null}'.encode())
        deep: dict[str, Any] = {}
        inner = deep
        for _ in range(300):  # deeper than orjson writes; parse_json takes up to 400
            inner["a"] = {}
            inner = inner["a"]
        self.assertEqual(json.loads(encode_json(deep)), deep)
        self.assertEqual(json.loads(encode_json({"n": 2**70})), {"n": 2**70})

    def test_a_body_must_be_an_object(self) -> None:
        self.assertEqual(json_object({"a": 1}), {"a": 1})
        self.assertEqual(json_object(None, required=False), {})
        for value, errcode in ((None, "M_NOT_JSON"), ([1], "M_BAD_JSON"), ("x", "M_BAD_JSON")):
            with self.assertRaises(MatrixError) as caught:
                json_object(value)
            self.assertEqual(caught.exception.errcode, errcode)

    def test_query_arguments_are_typed(self) -> None:
        req = _Request(_Http({b"limit": [b"10"], b"dir": [b"b"], b"full": [b"true"],
                              b"bad": [b"ten"], b"v": [b"a", b"b"], b"raw": [b"\xff"]}))
        self.assertEqual((req.int_arg("limit"), req.arg("dir"), req.bool_arg("full")),
                         (10, "b", True))
        self.assertEqual((req.arg("missing", "x"), req.int_arg("missing", 5), req.args("v")),
                         ("x", 5, ["a", "b"]))
        for call in (lambda: req.int_arg("bad"), lambda: req.bool_arg("dir"),
                     lambda: req.arg("raw")):
            with self.assertRaises(MatrixError) as caught:
                call()
            self.assertEqual(caught.exception.errcode, "M_INVALID_PARAM")
