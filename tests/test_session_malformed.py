"""Unit tests of `async_kernel.wire._session` on malformed messages: what is refused, and what
is decoded anyway (with its `problem`) because it is correctly signed and can be answered."""

from __future__ import annotations

import re

import orjson
import pytest
from signing import KEY, signed

from async_kernel.wire._frames import DELIMITER
from async_kernel.wire._session import MessageError, Session


@pytest.fixture
def session() -> Session:
    return Session(KEY)


GOOD_HEADER = orjson.dumps({"msg_id": "m1", "msg_type": "kernel_info_request", "session": "s"})
DEEP = b"[" * 1100 + b"]" * 1100  # deeper than orjson decodes


@pytest.mark.parametrize("key", [KEY, b""], ids=["signed", "unsigned"])
@pytest.mark.parametrize(
    ("header", "match"),
    [
        pytest.param(b"{not json", "not valid JSON", id="not-json"),
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"\xff\xfe", "not valid JSON", id="not-utf8"),
        pytest.param(b'{"msg_type": "\\ud800"}', "not valid JSON", id="lone-surrogate"),
        pytest.param(b"[]", "must be a JSON object, not an array", id="array"),
        pytest.param(b'"kernel_info_request"', "not a string", id="string"),
        pytest.param(b'{"msg_id": "m"}', "no msg_type", id="no-msg_type"),
        pytest.param(b'{"msg_type": 3}', "no msg_type", id="msg_type-number"),
        pytest.param(DEEP, "not valid JSON", id="too-deep"),
    ],
)
def test_a_header_that_cannot_be_decoded_is_refused(key: bytes, header: bytes, match: str) -> None:
    """Without a msg_type there is nothing to reply to: the message is dropped."""
    with pytest.raises(MessageError, match=match) as caught:
        Session(key).deserialize(signed(key, header, b"{}", b"{}", b"{}"))
    assert caught.value.kind == "header"


@pytest.mark.parametrize("key", [KEY, b""], ids=["signed", "unsigned"])
@pytest.mark.parametrize(
    ("frames", "match"),
    [
        pytest.param((b"{", b"{}", b"{}"), "the parent header is not valid JSON", id="parent"),
        pytest.param(
            (b"null", b"{}", b"{}"), "parent header must be a JSON object", id="parent-null"
        ),
        pytest.param(
            (b"{}", b"\xff\xfe", b"{}"), "metadata is not valid JSON", id="metadata-not-utf8"
        ),
        pytest.param(
            (b"{}", b"1", b"{}"),
            "metadata must be a JSON object, not a number",
            id="metadata-number",
        ),
        pytest.param((b"{}", b"{}", b'{"code": '), "content is not valid JSON", id="content-cut"),
        pytest.param((b"{}", b"{}", b""), "content is not valid JSON", id="content-empty"),
        pytest.param(
            (b"{}", b"{}", b'"text"'),
            "content must be a JSON object, not a string",
            id="content-string",
        ),
        pytest.param(
            (b"{}", b"{}", b"[1, 2]"),
            "content must be a JSON object, not an array",
            id="content-list",
        ),
        pytest.param((b"{}", b"{}", b"true"), "not a boolean", id="content-bool"),
        pytest.param(
            (b"{}", b"{}", b'{"code": "\\ud800"}'), "content is not valid JSON", id="lone-surrogate"
        ),
        pytest.param(
            (b"{}", b"{}", b'{"code": "\xed\xa0\x80"}'),
            "content is not valid JSON",
            id="surrogate-utf8",
        ),
        pytest.param(
            (b"{}", b"{}", b'{"code": "\xc3"}'), "content is not valid JSON", id="cut-utf8"
        ),
        pytest.param(
            (b"{}", b"{}", b'{"a": ' + DEEP + b"}"), "content is not valid JSON", id="too-deep"
        ),
        pytest.param((b"{}", b"{}", b"NaN"), "content is not valid JSON", id="nan"),
        pytest.param((b"{}", b"{}", b'{"x": 1e999}'), "content is not valid JSON", id="infinite"),
    ],
)
def test_malformed_parts_of_a_signed_message_are_its_problem(
    key: bytes, frames: tuple[bytes, bytes, bytes], match: str
) -> None:
    """A correctly signed message with a usable header is decoded, so that it can be answered."""
    msg = Session(key).deserialize([b"id", *signed(key, GOOD_HEADER, *frames)])
    assert msg.problem is not None
    assert re.search(match, msg.problem), msg.problem
    assert msg.msg_type == "kernel_info_request"
    assert msg.msg_id == "m1"
    assert msg.idents == [b"id"]
    assert msg.raw_header == GOOD_HEADER
    for part in (msg.parent_header, msg.metadata, msg.content):
        assert isinstance(part, dict)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"subshell_id": ["a"]}, "subshell_id must be a string or null, not an array"),
        ({"subshell_id": 3}, "subshell_id must be a string or null, not a number"),
        ({"subshell_id": {}}, "subshell_id must be a string or null, not an object"),
        ({"msg_id": None}, "msg_id must be a string, not null"),
        ({"msg_id": [1]}, "msg_id must be a string, not an array"),
        ({"session": 1.5}, "session must be a string, not a number"),
        ({"date": False}, "date must be a string, not a boolean"),
        ({"username": {}}, "username must be a string"),
        ({"version": 5}, "version must be a string"),
    ],
)
def test_header_fields_of_the_wrong_type_are_the_problem(
    fields: dict[str, object], match: str
) -> None:
    header = orjson.dumps({"msg_id": "m1", "msg_type": "execute_request"} | fields)
    msg = Session(KEY).deserialize(signed(KEY, header, b"{}", b"{}", b'{"code": "1"}'))
    assert msg.problem is not None
    assert match in msg.problem
    assert msg.content == {"code": "1"}


def test_a_header_without_msg_id_is_the_problem() -> None:
    header = orjson.dumps({"msg_type": "execute_request"})
    msg = Session(KEY).deserialize(signed(KEY, header, b"{}", b"{}", b"{}"))
    assert msg.problem == "the header has no msg_id"


def test_every_problem_is_named() -> None:
    header = orjson.dumps({"msg_id": "m", "msg_type": "execute_request", "subshell_id": 1})
    msg = Session(KEY).deserialize(signed(KEY, header, b"[]", b"1", b'"x"'))
    assert msg.problem is not None
    for part in ("subshell_id", "parent header", "metadata", "content"):
        assert part in msg.problem


def test_well_formed_messages_have_no_problem(session: Session) -> None:
    msg = Session(KEY).deserialize(session.serialize("execute_request", {"code": "1"}))
    assert msg.problem is None
    unusual = orjson.dumps({"msg_id": "m", "msg_type": "x", "subshell_id": None, "extra": [1]})
    assert Session(KEY).deserialize(signed(KEY, unusual, b"{}", b"{}", b"{}")).problem is None


def test_the_signature_is_checked_before_anything_is_decoded() -> None:
    """A forged message is refused for its signature, whatever its frames hold."""
    frames = signed(b"another key", b"{not json", b"{}", b"{}", b"[]")
    with pytest.raises(MessageError, match="signature") as caught:
        Session(KEY).deserialize(frames)
    assert caught.value.kind == "signature"
    frames = signed(b"another key", GOOD_HEADER, b"{}", b"{}", b"[]")
    with pytest.raises(MessageError, match="signature"):
        Session(KEY).deserialize(frames)


@pytest.mark.parametrize(
    ("frames", "kind"),
    [
        ([b"no delimiter"], "framing"),
        ([DELIMITER, b"sig", b"{}"], "framing"),
        ([DELIMITER, b"", GOOD_HEADER, b"{}", b"{}", b"{}"], "unsigned"),
        ([DELIMITER, b"0" * 64, GOOD_HEADER, b"{}", b"{}", b"{}"], "signature"),
    ],
)
def test_message_errors_say_their_kind(frames: list[bytes], kind: str) -> None:
    with pytest.raises(MessageError) as caught:
        Session(KEY).deserialize(frames)
    assert caught.value.kind == kind


def test_a_replay_says_its_kind(session: Session) -> None:
    frames = session.serialize("kernel_info_request")
    receiver = Session(KEY)
    receiver.deserialize(list(frames))
    with pytest.raises(MessageError) as caught:
        receiver.deserialize(list(frames))
    assert caught.value.kind == "replay"
