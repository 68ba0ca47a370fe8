"""Unit tests of `async_kernel.wire._json`: untrusted JSON in, always-encodable JSON out."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from async_kernel.wire._json import decode_object, dumps, json_kind


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"text": "\ud800"}, {"text": "\\ud800"}),
        ({"text": "a\udfffb", "ok": "é"}, {"text": "a\\udfffb", "ok": "é"}),
        ({"\ud83d": 1}, {"\\ud83d": 1}),
        (
            {"big": 2**70, "neg": -(2**64), "fine": 2**63},
            {"big": str(2**70), "neg": str(-(2**64)), "fine": 2**63},
        ),
        ({"in": [("\ud800",)], "set": {"\udc00"}}, {"in": [["\\ud800"]], "set": ["\\udc00"]}),
    ],
)
def test_what_orjson_refuses_is_made_safe(value: Any, expected: Any) -> None:
    encoded = dumps(value)
    assert orjson.loads(encoded) == expected


def test_deep_nesting_is_cut_not_refused() -> None:
    deep: list[Any] = []
    inner = deep
    for _ in range(400):
        inner.append([])
        inner = inner[0]
    decoded = orjson.loads(dumps({"deep": deep, "text": "\ud800"}))
    assert decoded["text"] == "\\ud800"
    level = decoded["deep"]
    depth = 0
    while isinstance(level, list):
        level = level[0]
        depth += 1
    assert isinstance(level, str)
    assert "nested deeper than" in level
    assert depth < 254  # what orjson can write


def test_what_orjson_can_write_is_unchanged() -> None:
    value = {"a": [1, 2.5, None, True, "é😀"], "b": {"c": {}}}
    assert dumps(value) == orjson.dumps(value)


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (b"{}", None),
        (b'{"a": [1]}', None),
        (b"[]", "the part must be a JSON object, not an array"),
        (b"1.5", "the part must be a JSON object, not a number"),
        (b'"s"', "the part must be a JSON object, not a string"),
        (b"false", "the part must be a JSON object, not a boolean"),
        (b"null", "the part must be a JSON object, not null"),
    ],
)
def test_decode_object(frame: bytes, problem: str | None) -> None:
    obj, found = decode_object(frame, "part")
    assert found == problem
    assert obj == (json.loads(frame) if problem is None else {})


@pytest.mark.parametrize(
    "frame", [b"", b"{", b'{"a": "\\ud800"}', b'{"a": "\xed\xa0\x80"}', b"\xff", b"[" * 1100]
)
def test_decode_object_names_undecodable_frames(frame: bytes) -> None:
    obj, found = decode_object(frame, "content")
    assert obj == {}
    assert found is not None
    assert found.startswith("the content is not valid JSON (")


def test_json_kind_of_other_values() -> None:
    assert json_kind(b"x") == "bytes"
