"""Malformed messages over a real kernel: a correctly signed request is always answered.

Requests whose header fields, metadata or content are malformed get `busy`, an error reply
that names the problem (`ename: MalformedMessage`) and `idle`; messages that fail the
signature or cannot be framed are dropped, and logged once per kind. Waits have deadlines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from jupyter_client.connect import write_connection_file
from raw_client import TIMEOUT, RawClient

if TYPE_CHECKING:
    from pathlib import Path


DEEP = b"[" * 1100 + b"]" * 1100
"""Nested deeper than orjson decodes."""


def assert_refused(raw: RawClient, tag: str, reply_type: str, *named: str) -> dict[str, Any]:
    """Check that request `tag` got busy, an error reply naming `named`, and idle."""
    answer = raw.wait_done(tag)
    assert answer.states == ["busy", "idle"]
    assert answer.reply is not None
    assert answer.reply["header"]["msg_type"] == reply_type
    content = answer.reply["content"]
    assert content["status"] == "error"
    assert content["ename"] == "MalformedMessage", content
    for text in named:
        assert text in content["evalue"], content
    return content


def assert_alive(raw: RawClient, channel: str = "shell") -> None:
    tag = raw.send(channel, "kernel_info_request")
    answer = raw.wait_done(tag)
    assert answer.reply is not None
    assert answer.reply["content"]["status"] == "ok"


CONTENT_FRAMES = [
    pytest.param(b"[1, 2]", "content must be a JSON object, not an array", id="list"),
    pytest.param(b'"code"', "content must be a JSON object, not a string", id="string"),
    pytest.param(b"12", "content must be a JSON object, not a number", id="number"),
    pytest.param(b"null", "content must be a JSON object, not null", id="null"),
    pytest.param(b'{"code": 1', "content is not valid JSON", id="cut"),
    pytest.param(b'{"code": "\\ud800"}', "content is not valid JSON", id="lone-surrogate"),
    pytest.param(b'{"code": "\xed\xa0\x80"}', "content is not valid JSON", id="surrogate-utf8"),
    pytest.param(b'{"code": "\xff"}', "content is not valid JSON", id="invalid-utf8"),
    pytest.param(b'{"code": ' + DEEP + b"}", "content is not valid JSON", id="too-deep"),
]


@pytest.mark.parametrize(("content", "named"), CONTENT_FRAMES)
@pytest.mark.parametrize(
    ("channel", "msg_type"),
    [
        ("shell", "execute_request"),
        ("shell", "complete_request"),
        ("shell", "kernel_info_request"),
        ("control", "execute_request"),
        # Malformed, a shutdown must not shut down: the kernel answers and stays.
        ("control", "shutdown_request"),
    ],
)
def test_malformed_content_gets_an_error_reply(
    raw: RawClient, channel: str, msg_type: str, content: bytes, named: str
) -> None:
    header = raw.header(msg_type)
    raw.send_frames(channel, orjson.dumps(header), content=content)
    reply_type = msg_type.removesuffix("_request") + "_reply"
    evalue = assert_refused(raw, header["test_tag"], reply_type, named)["evalue"]
    assert evalue.startswith(f"malformed {msg_type}:")
    assert_alive(raw, channel)


@pytest.mark.parametrize(
    ("parts", "named"),
    [
        pytest.param({"metadata": b"[]"}, "metadata must be a JSON object", id="metadata-list"),
        pytest.param({"metadata": b"\xfe"}, "metadata is not valid JSON", id="metadata-bytes"),
        pytest.param({"parent": b"7"}, "parent header must be a JSON object", id="parent"),
    ],
)
def test_malformed_metadata_or_parent_gets_an_error_reply(
    raw: RawClient, parts: dict[str, bytes], named: str
) -> None:
    header = raw.header("execute_request")
    raw.send_frames("shell", orjson.dumps(header), content=b'{"code": "1"}', **parts)
    assert_refused(raw, header["test_tag"], "execute_reply", named)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        pytest.param({"subshell_id": ["a", "b"]}, "subshell_id must be a string", id="list"),
        pytest.param({"subshell_id": 5}, "subshell_id must be a string", id="number"),
        pytest.param({"subshell_id": {"a": 1}}, "subshell_id must be a string", id="object"),
        pytest.param({"msg_id": ["x"]}, "msg_id must be a string", id="msg_id-list"),
        pytest.param({"session": 3}, "session must be a string", id="session-number"),
    ],
)
@pytest.mark.parametrize("msg_type", ["execute_request", "kernel_info_request"])
def test_header_fields_of_the_wrong_type_get_an_error_reply(
    raw: RawClient, msg_type: str, fields: dict[str, Any], named: str
) -> None:
    """A list subshell_id used to crash the dispatcher (unhashable) and leave no reply."""
    tag = raw.send("shell", msg_type, {"code": "1"}, header=fields)
    assert_refused(raw, tag, msg_type.removesuffix("_request") + "_reply", named)


def test_a_header_without_msg_id_gets_an_error_reply(raw: RawClient) -> None:
    header = raw.header("kernel_info_request")
    del header["msg_id"]
    raw.send_frames("shell", orjson.dumps(header))
    assert_refused(raw, header["test_tag"], "kernel_info_reply", "the header has no msg_id")


@pytest.mark.parametrize("msg_type", ["comm_open", "comm_msg", "comm_close"])
def test_malformed_comm_messages_get_busy_and_idle(raw: RawClient, msg_type: str) -> None:
    """Comm messages have no reply, but their status still says they were handled."""
    header = raw.header(msg_type)
    raw.send_frames("shell", orjson.dumps(header), content=b'["comm_id"]')
    answer = raw.wait_done(header["test_tag"], reply=False)
    assert answer.states == ["busy", "idle"]
    assert_alive(raw)  # runs after it on the shell: no reply came for the comm message
    assert raw.answer(header["test_tag"]).reply is None


@pytest.mark.parametrize(
    ("channel", "msg_type", "content", "named"),
    [
        ("shell", "execute_request", {"code": 5}, "code must be a string, not a number"),
        ("shell", "execute_request", {}, "the content has no code"),
        ("shell", "execute_request", {"code": "1", "silent": "no"}, "silent must be a boolean"),
        ("shell", "execute_request", {"code": "1", "user_expressions": [1]}, "user_expressions"),
        ("shell", "complete_request", {"code": "x", "cursor_pos": "1"}, "cursor_pos"),
        ("shell", "inspect_request", {"code": "x", "detail_level": "1"}, "detail_level"),
        ("shell", "is_complete_request", {"code": None}, "code must be a string, not null"),
        ("shell", "history_request", {"hist_access_type": "tail", "n": "3"}, "n must be"),
        ("shell", "comm_info_request", {"target_name": ["x"]}, "target_name must be a string"),
        ("control", "shutdown_request", {"restart": "yes"}, "restart must be a boolean"),
        ("control", "delete_subshell_request", {"subshell_id": 3}, "subshell_id must be"),
    ],
)
def test_content_fields_of_the_wrong_type_get_an_error_reply(
    raw: RawClient, channel: str, msg_type: str, content: dict[str, Any], named: str
) -> None:
    tag = raw.send(channel, msg_type, content)
    assert_refused(raw, tag, msg_type.removesuffix("_request") + "_reply", named)
    assert_alive(raw, channel)


@pytest.mark.parametrize(
    "content",
    [
        {"comm_id": ["x"], "data": {}},
        {"comm_id": "x", "data": "not an object"},
        {"data": {}},
    ],
)
def test_comm_messages_with_wrong_fields_get_busy_and_idle(
    raw: RawClient, content: dict[str, Any]
) -> None:
    """An unhashable comm_id used to crash the dispatcher, with no status at all."""
    tag = raw.send("shell", "comm_msg", content)
    assert raw.wait_done(tag, reply=False).states == ["busy", "idle"]
    assert_alive(raw)


@pytest.mark.parametrize(
    ("code", "status", "field", "text"),
    [
        ("raise ValueError('\\ud800')", "error", "evalue", "\\ud800"),
        ("'\\ud800'", "ok", None, None),
        ("print('a\\udfffb')", "ok", None, None),
        ("x = 2 ** 70", "ok", None, None),
    ],
)
def test_what_orjson_cannot_write_still_gets_a_reply(
    raw: RawClient, code: str, status: str, field: str | None, text: str | None
) -> None:
    """A lone surrogate made by user code is escaped in the reply and the output."""
    tag = raw.send(
        "shell", "execute_request", {"code": code, "user_expressions": {"big": "2 ** 70"}}
    )
    answer = raw.wait_done(tag)
    assert answer.reply is not None
    content = answer.reply["content"]
    assert content["status"] == status, content
    if field is not None:
        assert content[field] == text
    else:
        assert content["user_expressions"]["big"]["data"]["text/plain"] == str(2**70)
    outputs = {m["header"]["msg_type"]: m["content"] for m in answer.iopub}
    if "stream" in outputs:
        assert outputs["stream"]["text"] == "a\\udfffb\n"
    if "execute_result" in outputs:
        assert outputs["execute_result"]["data"]["text/plain"] == "'\\ud800'"


@pytest.mark.parametrize(
    ("content", "named"),
    [
        pytest.param(b"[]", "the input_reply is malformed: the content must be", id="list"),
        pytest.param(b'{"value": 5}', "the input_reply's value must be a string", id="number"),
    ],
)
def test_a_malformed_input_reply_fails_the_input_call(
    raw: RawClient, content: bytes, named: str
) -> None:
    """The cell that waits for input gets an error instead of waiting forever."""
    tag = raw.send("shell", "execute_request", {"code": "x = input('?')", "allow_stdin": True})
    answer = raw.answer(tag)
    request = raw.wait_until(lambda: answer.stdin, "the input request")[0]
    assert request["header"]["msg_type"] == "input_request"
    reply = orjson.dumps(raw.header("input_reply"))
    raw.send_frames("stdin", reply, orjson.dumps(request["header"]), content=content)
    raw.wait_done(tag)
    assert answer.reply is not None
    assert answer.reply["content"]["status"] == "error"
    assert answer.reply["content"]["ename"] == "InputReplyError"
    assert named in answer.reply["content"]["evalue"]


# --- drops are logged once per kind -------------------------------------------------------------


def test_drops_are_logged_once_per_kind(tmp_path: Path) -> None:
    """A flood of bad messages is a line per kind in the log, not a line per message."""
    connection_file = tmp_path / "kernel.json"
    write_connection_file(str(connection_file), ip="127.0.0.1", key=b"the-key")
    info = json.loads(connection_file.read_text())
    log = tmp_path / "stderr.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "async_kernel", "start", "-f", str(connection_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    raw: RawClient | None = None
    try:
        raw = RawClient(info)
        good = orjson.dumps(raw.header("kernel_info_request"))
        for i in range(100):
            raw.send_frames("shell", good, content=b'{"n": %d}' % i, signature=b"0" * 64)
            raw.send_frames("shell", good, content=b'{"n": %d}' % i, signature=b"")
            raw.sockets["shell"].send_multipart([b"no delimiter %d" % i])
            raw.send_frames("control", b"[%d]" % i)  # signed, but no header to reply to
        for _ in range(3):
            malformed = raw.header("kernel_info_request")
            raw.send_frames("shell", orjson.dumps(malformed), content=b"[]")
            raw.wait_done(malformed["test_tag"])
        # The same socket keeps the order: once these are answered, the drops are behind us.
        assert_alive(raw)
        assert_alive(raw, "control")
        tag = raw.send("control", "shutdown_request", {"restart": False})
        assert raw.wait_done(tag).reply is not None
        assert process.wait(TIMEOUT) == 0
    finally:
        if raw is not None:
            raw.close()
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT)
    lines = [line for line in log.read_text().splitlines() if "more of kind" not in line]
    counts = [line for line in log.read_text().splitlines() if "more of kind" in line]
    for text in ("invalid signature", "unsigned message", "no <IDS|MSG> delimiter", "header"):
        matching = [line for line in lines if text in line and "dropped a message" in line]
        assert len(matching) == 1, (text, lines)
    # At shutdown, what was only counted is reported.
    assert any("99 more of kind 'signature'" in line for line in counts), counts
    assert any("99 more of kind 'header'" in line for line in counts), counts
    refused = [line for line in lines if "refused a malformed kernel_info_request" in line]
    assert len(refused) == 1, lines
    assert any("2 more of kind 'malformed'" in line for line in counts), counts
