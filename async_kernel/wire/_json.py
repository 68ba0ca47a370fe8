"""JSON for message parts: orjson both ways, with the edge cases of untrusted input handled.

Decoding names what is wrong with a frame instead of raising; encoding never refuses a value
that user code produced (a lone surrogate, a huge integer, deep nesting), so that a reply can
always be sent.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

__all__ = ("decode_object", "dumps", "json_default", "json_kind")

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def json_default(obj: Any) -> Any:
    """Encode what orjson does not know: bytes as base64, sets as lists, the rest as str."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)  # pyright: ignore[reportUnknownArgumentType]
    if isinstance(obj, complex):
        return str(obj)
    return repr(obj)


def dumps(obj: Any) -> bytes:
    """Encode a message part; what orjson cannot write is made safe rather than refused."""
    try:
        return orjson.dumps(obj, default=json_default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        # What orjson cannot write: lone surrogates ("\ud800" from user code), integers beyond
        # 64 bits, nesting deeper than 254. The message still goes out, with those made safe.
        return orjson.dumps(_encodable(obj), default=json_default, option=_OPTIONS)


_MAX_DEPTH = 200
_INT_RANGE = range(-(2**63), 2**64)


def _encodable(obj: Any, depth: int = 0) -> Any:
    """Return `obj` with lone surrogates escaped, huge integers and deep nesting as text."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, int) and not isinstance(obj, bool) and obj not in _INT_RANGE:
        return str(obj)
    if not isinstance(obj, dict | list | tuple | set | frozenset):
        return obj
    if depth >= _MAX_DEPTH:
        return f"<{type(obj).__name__} nested deeper than {_MAX_DEPTH} levels>"
    if isinstance(obj, dict):
        return {_encodable(k): _encodable(v, depth + 1) for k, v in obj.items()}  # pyright: ignore[reportUnknownVariableType]
    return [_encodable(v, depth + 1) for v in obj]  # pyright: ignore[reportUnknownVariableType]


def decode_object(frame: bytes, name: str) -> tuple[dict[str, Any], str | None]:
    """Decode one JSON frame that must hold an object; return it (or `{}`) and the problem."""
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError as e:
        return {}, f"the {name} is not valid JSON ({e})"
    if not isinstance(obj, dict):
        return {}, f"the {name} must be a JSON object, not {json_kind(obj)}"
    return obj, None


def json_kind(value: object) -> str:
    """Name the JSON type of a decoded value, for messages about it."""
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "an object"
        case _:
            return type(value).__name__
