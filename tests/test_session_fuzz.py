"""A bounded, deterministic fuzz of `Session.deserialize` with hypothesis.

Random frames, random JSON (and not-quite-JSON) in each frame, signed correctly, wrongly or
not at all: `deserialize` raises nothing but `MessageError`, and a correctly signed message
whose header decodes to an object with a string `msg_type` always comes back as a `Message`
(with a `problem` exactly when something in it is malformed), ready to be answered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from async_kernel.wire._frames import DELIMITER
from async_kernel.wire._session import MessageError, Session

KEY = b"fuzz-key"
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is deterministic
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
STRING_FIELDS = ("msg_id", "session", "username", "date", "version")

# Text with anything in it, lone surrogates included: `json.dumps` escapes them ("\ud800"),
# which is valid JSON to Python and refused by orjson.
text = st.text(st.characters(exclude_categories=()), max_size=12) | st.sampled_from(
    ["\ud800", "x\udfffy", "\U0001f600", "\x00"]
)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=10,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass")


headers = st.fixed_dictionaries(
    {"msg_type": st.sampled_from(["execute_request", "kernel_info_request"]) | json_values},
    optional={
        **dict.fromkeys(STRING_FIELDS, text | json_values),
        "subshell_id": st.none() | text | json_values,
        "extra": json_values,
    },
)
plain = st.text(max_size=12)
good_headers = st.fixed_dictionaries(
    {"msg_id": plain, "msg_type": st.sampled_from(["execute_request", "comm_msg"]) | plain},
    optional={**dict.fromkeys(STRING_FIELDS[1:], plain), "subshell_id": st.none() | plain},
)
objects = st.dictionaries(text, json_values, max_size=4)
broken = st.sampled_from(
    [b"", b"{", b"[" * 1100 + b"]" * 1100, b'{"a": "\xed\xa0\x80"}', b"\xff\xfe", b"NaN", b"1e999"]
)
frames_of_json = (
    headers.map(_dumps)
    | objects.map(_dumps)
    | json_values.map(_dumps)
    | broken
    | st.binary(max_size=24)
    | json_values.map(_dumps).map(lambda b: b[: len(b) // 2])
)


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, list[bytes], bool]:
    """A key, the frames of one message, and whether they are correctly signed and framed."""
    key = draw(st.sampled_from([KEY, b""]))
    # Mostly a usable header and objects, so that many messages get past the header.
    header = st.sampled_from([good_headers] * 4 + [headers] * 2).flatmap(lambda s: s.map(_dumps))
    parts = [draw(st.sampled_from([header] * 3 + [frames_of_json]).flatmap(lambda s: s))]
    parts += [
        draw(st.sampled_from([objects.map(_dumps)] * 3 + [frames_of_json]).flatmap(lambda s: s))
        for _ in range(3)
    ]
    signing = draw(st.sampled_from(["right", "right", "right", "wrong", "empty"]))
    signature = b""
    if signing == "right" and key:
        mac = hmac.new(key, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(part)
        signature = mac.hexdigest().encode()
    elif signing == "wrong":
        signature = draw(st.binary(min_size=1, max_size=64))
    idents = draw(st.lists(st.binary(max_size=8).filter(lambda b: b != DELIMITER), max_size=2))
    buffers = draw(st.lists(st.binary(max_size=8), max_size=2))
    frames = [*idents, DELIMITER, signature, *parts, *buffers]
    framing = draw(st.sampled_from(["whole"] * 6 + ["cut", "no delimiter"]))
    if framing == "cut":
        frames = frames[: len(idents) + draw(st.integers(0, 5))]
    elif framing == "no delimiter":
        frames.remove(DELIMITER)
    accepted = framing == "whole" and (not key or signing == "right")
    return key, frames, accepted


def _object(frame: bytes) -> dict[str, Any] | None:
    """What orjson makes of a frame, if it is an object."""
    try:
        value = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _well_formed_header(header: dict[str, Any]) -> bool:
    subshell_id = header.get("subshell_id")
    return (
        isinstance(header.get("msg_id"), str)
        and all(isinstance(header[f], str) for f in STRING_FIELDS if f in header)
        and (subshell_id is None or isinstance(subshell_id, str))
    )


@FUZZ
@given(messages())
def test_deserialize_raises_only_message_error_and_accepts_what_it_can_answer(
    message: tuple[bytes, list[bytes], bool],
) -> None:
    key, frames, accepted = message
    session = Session(key)
    header = _object(frames[frames.index(DELIMITER) + 2]) if accepted else None
    answerable = header is not None and isinstance(header.get("msg_type"), str)
    if not answerable:
        with pytest.raises(MessageError) as caught:
            session.deserialize(list(frames))
        assert caught.value.kind in {"framing", "unsigned", "signature", "replay", "header"}
        event(f"refused: {caught.value.kind}")
        return
    msg = session.deserialize(list(frames))  # no exception: it must be answered
    assert header is not None
    rest = frames[frames.index(DELIMITER) + 1 :]
    assert msg.header == header
    assert msg.raw_header == rest[1]
    assert msg.msg_type == header["msg_type"]
    assert msg.idents == frames[: frames.index(DELIMITER)]
    assert msg.buffers == rest[5:]
    decoded = [_object(part) for part in rest[2:5]]
    assert [msg.parent_header, msg.metadata, msg.content] == [d or {} for d in decoded]
    well_formed = _well_formed_header(header) and all(d is not None for d in decoded)
    assert (msg.problem is None) == well_formed, msg.problem
    event("accepted" if well_formed else "accepted with a problem")
    # Whatever it holds, it can be answered.
    reply = session.serialize("x_reply", {"status": "error"}, parent=msg, idents=msg.idents)
    assert reply[len(msg.idents) + 3] == msg.raw_header
