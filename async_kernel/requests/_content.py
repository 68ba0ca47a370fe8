"""What each request's content must hold: the fields its handler reads, and their JSON types.

The dispatcher checks a request against this table before it runs, so a handler never sees
`silent: "no"` (which `bool()` would take for true) or a `comm_id` that is a list: such a
request is answered with a `MalformedMessage` error that names the field. Fields that are not
listed are not looked at, and an absent optional field takes the handler's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from async_kernel._enums import MsgType
from async_kernel.wire._json import json_kind

if TYPE_CHECKING:
    from async_kernel.wire._session import Message

__all__ = ("CONTENT", "METADATA", "Field", "request_problem")


@dataclass(frozen=True, slots=True)
class Field:
    """The JSON type of one field of a request's content or metadata."""

    kind: type
    """`str`, `bool`, `int`, `float` (any number) or `dict`; an `int` is never a `bool`."""
    required: bool = False
    """The request is meaningless without it."""
    nullable: bool = False
    """`null` is allowed, and means the same as an absent field."""
    values: type | None = None
    """For a `dict`: the type each of its values must have."""

    def problem(self, value: Any) -> str | None:
        """Say what is wrong with `value` for this field, or None."""
        if value is None and self.nullable:
            return None
        if not _is(value, self.kind):
            return f"must be {_NAMES[self.kind]}, not {json_kind(value)}"
        if self.values is not None and value is not None:
            mapping: dict[str, Any] = value
            for key, item in mapping.items():
                if not _is(item, self.values):
                    kind = json_kind(item)
                    return f"values must each be {_NAMES[self.values]}, not {kind} (at {key!r})"
        return None


_NAMES: dict[type, str] = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    dict: "an object",
    list: "an array",
}


def _is(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind)


_CODE = Field(str, required=True)
_CURSOR = Field(int, nullable=True)
_COMM_ID = Field(str, required=True)
_DATA = Field(dict, nullable=True)

CONTENT: dict[MsgType, dict[str, Field]] = {
    MsgType.execute_request: {
        "code": _CODE,
        "silent": Field(bool),
        "store_history": Field(bool),
        "user_expressions": Field(dict, nullable=True, values=str),
        "allow_stdin": Field(bool),
        "stop_on_error": Field(bool),
    },
    MsgType.complete_request: {"code": _CODE, "cursor_pos": _CURSOR},
    MsgType.inspect_request: {"code": _CODE, "cursor_pos": _CURSOR, "detail_level": Field(int)},
    MsgType.is_complete_request: {"code": _CODE},
    MsgType.history_request: {
        "output": Field(bool),
        "raw": Field(bool),
        "hist_access_type": Field(str),
        "session": Field(int),
        "start": Field(int),
        "stop": Field(int, nullable=True),
        "n": Field(int, nullable=True),
        "pattern": Field(str),
        "unique": Field(bool),
    },
    MsgType.comm_info_request: {"target_name": Field(str, nullable=True)},
    MsgType.comm_open: {
        "comm_id": _COMM_ID,
        "target_name": Field(str, required=True),
        "data": _DATA,
    },
    MsgType.comm_msg: {"comm_id": _COMM_ID, "data": _DATA},
    MsgType.comm_close: {"comm_id": _COMM_ID, "data": _DATA},
    MsgType.shutdown_request: {"restart": Field(bool)},
    MsgType.delete_subshell_request: {"subshell_id": Field(str, required=True)},
}
"""The content fields of each request type that handlers read."""

METADATA: dict[MsgType, dict[str, Field]] = {
    MsgType.execute_request: {"cellId": Field(str, nullable=True), "tags": Field(list)},
}
"""The metadata fields of each request type that handlers read."""


def request_problem(msg: Message) -> str | None:
    """Say which field of a request's content or metadata is missing or of the wrong type."""
    try:
        msg_type = MsgType(msg.msg_type)
    except ValueError:
        return None
    for part, fields in (("content", CONTENT), ("metadata", METADATA)):
        given: dict[str, Any] = getattr(msg, part)
        for name, field in fields.get(msg_type, {}).items():
            if name not in given:
                if field.required:
                    return f"the {part} has no {name}"
                continue
            if (problem := field.problem(given[name])) is not None:
                return f"the {part}'s {name} {problem}"
    return None
