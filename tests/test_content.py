"""Unit tests of `async_kernel.requests._content`: which request contents are malformed."""

from __future__ import annotations

from typing import Any

import pytest

from async_kernel._enums import MsgType
from async_kernel.requests._content import CONTENT, METADATA, Field, request_problem
from async_kernel.wire._session import Message


def problem(msg_type: str, content: dict[str, Any], metadata: Any = None) -> str | None:
    header = {"msg_id": "m", "msg_type": msg_type}
    return request_problem(Message(header, {}, metadata or {}, content))


@pytest.mark.parametrize(
    ("msg_type", "content"),
    [
        ("execute_request", {"code": "1"}),
        (
            "execute_request",
            {
                "code": "1",
                "silent": False,
                "store_history": True,
                "user_expressions": {"a": "1 + 1"},
                "allow_stdin": True,
                "stop_on_error": False,
                "something_new": [1, 2],  # fields the kernel does not read are not checked
            },
        ),
        ("execute_request", {"code": "", "user_expressions": None}),
        ("complete_request", {"code": "pri", "cursor_pos": 3}),
        ("complete_request", {"code": "pri", "cursor_pos": None}),
        ("inspect_request", {"code": "print", "cursor_pos": 5, "detail_level": 1}),
        ("is_complete_request", {"code": "if x:"}),
        ("history_request", {"hist_access_type": "tail", "n": 10, "raw": True, "output": False}),
        ("history_request", {"hist_access_type": "range", "session": -1, "start": 1, "stop": None}),
        ("history_request", {"hist_access_type": "search", "pattern": "a*", "unique": True}),
        ("comm_info_request", {}),
        ("comm_info_request", {"target_name": None}),
        ("comm_open", {"comm_id": "c", "target_name": "t", "data": {}}),
        ("comm_msg", {"comm_id": "c", "data": {"x": 1}}),
        ("comm_close", {"comm_id": "c"}),
        ("shutdown_request", {"restart": True}),
        ("delete_subshell_request", {"subshell_id": "abc"}),
        ("kernel_info_request", {"anything": ["goes"]}),
        ("debug_request", {"seq": "1", "type": 5}),  # the debugger's protocol is not checked
        ("unknown_request", {"code": 5}),  # the dispatcher refuses unknown types itself
    ],
)
def test_well_formed_contents(msg_type: str, content: dict[str, Any]) -> None:
    assert problem(msg_type, content) is None


@pytest.mark.parametrize(
    ("msg_type", "content", "expected"),
    [
        ("execute_request", {}, "the content has no code"),
        ("execute_request", {"code": 1}, "the content's code must be a string, not a number"),
        ("execute_request", {"code": None}, "code must be a string, not null"),
        (
            "execute_request",
            {"code": "1", "silent": "no"},
            "silent must be a boolean, not a string",
        ),
        ("execute_request", {"code": "1", "silent": 0}, "silent must be a boolean, not a number"),
        (
            "execute_request",
            {"code": "1", "store_history": None},
            "store_history must be a boolean",
        ),
        (
            "execute_request",
            {"code": "1", "user_expressions": []},
            "must be an object, not an array",
        ),
        (
            "execute_request",
            {"code": "1", "user_expressions": {"a": 1}},
            "user_expressions values must each be a string, not a number (at 'a')",
        ),
        ("execute_request", {"code": "1", "allow_stdin": "true"}, "allow_stdin must be a boolean"),
        ("execute_request", {"code": "1", "stop_on_error": []}, "stop_on_error must be a boolean"),
        ("complete_request", {"code": "x", "cursor_pos": "1"}, "cursor_pos must be an integer"),
        ("complete_request", {"code": "x", "cursor_pos": 1.5}, "cursor_pos must be an integer"),
        ("complete_request", {"code": "x", "cursor_pos": True}, "cursor_pos must be an integer"),
        ("complete_request", {"cursor_pos": 1}, "the content has no code"),
        ("inspect_request", {"code": "x", "detail_level": "1"}, "detail_level must be an integer"),
        ("is_complete_request", {"code": ["x"]}, "code must be a string, not an array"),
        ("history_request", {"n": "10"}, "n must be an integer, not a string"),
        ("history_request", {"raw": 1}, "raw must be a boolean"),
        ("history_request", {"hist_access_type": 1}, "hist_access_type must be a string"),
        ("history_request", {"session": None}, "session must be an integer, not null"),
        ("history_request", {"pattern": {}}, "pattern must be a string, not an object"),
        ("comm_info_request", {"target_name": 3}, "target_name must be a string"),
        ("comm_open", {"target_name": "t"}, "the content has no comm_id"),
        ("comm_open", {"comm_id": "c"}, "the content has no target_name"),
        ("comm_open", {"comm_id": "c", "target_name": ["t"]}, "target_name must be a string"),
        ("comm_msg", {"comm_id": ["c"]}, "comm_id must be a string, not an array"),
        ("comm_msg", {"comm_id": "c", "data": "x"}, "data must be an object, not a string"),
        ("comm_close", {}, "the content has no comm_id"),
        ("shutdown_request", {"restart": "yes"}, "restart must be a boolean, not a string"),
        ("delete_subshell_request", {}, "the content has no subshell_id"),
        ("delete_subshell_request", {"subshell_id": 3}, "subshell_id must be a string"),
    ],
)
def test_malformed_contents(msg_type: str, content: dict[str, Any], expected: str) -> None:
    found = problem(msg_type, content)
    assert found is not None
    assert expected in found


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"cellId": 3}, "the metadata's cellId must be a string, not a number"),
        ({"tags": "thread"}, "the metadata's tags must be an array, not a string"),
    ],
)
def test_malformed_metadata(metadata: dict[str, Any], expected: str) -> None:
    assert problem("execute_request", {"code": "1"}, metadata) == expected
    assert problem("execute_request", {"code": "1"}, {"cellId": None, "tags": ["x", 1]}) is None


def test_every_field_names_a_json_type() -> None:
    for table in (CONTENT, METADATA):
        for msg_type, fields in table.items():
            assert isinstance(msg_type, MsgType)
            for field in fields.values():
                assert field.kind in {str, bool, int, float, dict, list}


def test_a_number_field_takes_integers_and_floats_but_not_booleans() -> None:
    number = Field(float)
    assert number.problem(1) is None
    assert number.problem(1.5) is None
    assert number.problem(True) == "must be a number, not a boolean"
