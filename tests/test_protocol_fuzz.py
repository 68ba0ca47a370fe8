"""A bounded, deterministic fuzz of a real kernel: every signed request is answered.

Hypothesis draws correctly signed messages of every known msg_type, on shell and control, with
odd content, metadata, parent and header fields: values of the wrong type, extra keys, frames
that are not JSON objects or not JSON at all. Each request must get `busy`, a reply (if it is
a request: ok, error or aborted) and `idle`, within a deadline; a message whose header cannot
be decoded must be dropped without harm. Afterwards the kernel still answers.

Cells come from a list of harmless snippets: random text would be run as code. A shutdown is
only sent with content that must be refused; the last test shuts a kernel of its own down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from raw_client import RawClient

from async_kernel._enums import Channel, MsgType
from async_kernel.requests._dispatcher import DEFAULT_RUN_MODES

if TYPE_CHECKING:
    pass

FUZZ = settings(
    max_examples=100,  # per kernel (asyncio and trio): 200 in all
    deadline=None,
    derandomize=True,
    database=None,
    # Shrinking would replay failures against a kernel that may be stuck; the failing
    # example is printed as drawn.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

MSG_TYPES = [t for t in MsgType if t is not MsgType.input_reply]
"""Every type the dispatcher takes on shell or control (see `DEFAULT_RUN_MODES`)."""
HANDLERS_THAT_READ_CONTENT = [
    MsgType.execute_request,
    MsgType.execute_request,
    MsgType.complete_request,
    MsgType.inspect_request,
    MsgType.history_request,
    MsgType.is_complete_request,
]
"""Drawn more often than the others: their handlers do the most with the content."""

CELLS = [
    "",
    "1",
    "x = 1",
    "1/0",
    "print('fuzz')",
    "import sys; sys.stderr.write('e')",
    "##thread\n2",
    "##task\nx = 3",
    "##queue\n4",
    "RunMode.thread\n5",
    "%time 1",
    "?",
    "undefined_name",
    "def f(:",
    "'\\ud800'",
    "raise ValueError('\\udfff')",
    "await __import__('anyio').sleep(0)",
    "from IPython.display import display; display({'a': 1}, raw=True)",
]
"""Harmless cells: nothing here reads stdin, sleeps, exits or interrupts."""

EXPRESSIONS = ["1 + 1", "x", "undefined", "'\\ud800'", "2 ** 70", ")", ""]

# Text without lone surrogates: those cannot be written by orjson; they come as raw bytes.
text = st.text(max_size=10)
comment = st.text(st.characters(categories=["L", "N", "P", "S", "Zs"]), max_size=20)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what orjson writes
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
odd = json_values  # a value of any JSON type, usually the wrong one


small_ints = st.integers(-5, 60) | st.sampled_from([2**31, 2**63 - 1, -(2**63)])
RIGHT: dict[str, st.SearchStrategy[Any]] = {
    "code": st.sampled_from(CELLS) | comment.map(lambda c: f"# {c}"),
    "silent": st.booleans(),
    "store_history": st.booleans(),
    "allow_stdin": st.booleans(),
    "stop_on_error": st.booleans(),
    "user_expressions": st.none() | st.dictionaries(text, st.sampled_from(EXPRESSIONS), max_size=3),
    "cursor_pos": st.none() | small_ints,
    "detail_level": st.integers(-2, 3),
    "output": st.booleans(),
    "raw": st.booleans(),
    "hist_access_type": st.sampled_from(["tail", "range", "search"]) | text,
    "session": small_ints,
    "start": small_ints,
    "stop": st.none() | small_ints,
    "n": st.none() | small_ints,
    "pattern": st.sampled_from(["*", "x*", "?"]) | text,
    "unique": st.booleans(),
    "target_name": st.none() | st.sampled_from(["jupyter.widget", "nobody"]) | text,
    "comm_id": text,
    "data": st.none() | st.dictionaries(text, json_values, max_size=3),
    "subshell_id": text,
    "restart": st.booleans(),
    "extra": json_values,
}
"""Values of the type each content field has in the protocol, edge cases included."""

_EXECUTE = ["code", "silent", "store_history", "user_expressions", "allow_stdin", "stop_on_error"]
_HISTORY = ["output", "raw", "hist_access_type", "session", "start", "stop", "n", "pattern"]
_COMM = ["comm_id", "data"]
CONTENT_FIELDS: dict[MsgType, list[str]] = {
    MsgType.execute_request: _EXECUTE,
    MsgType.complete_request: ["code", "cursor_pos"],
    MsgType.inspect_request: ["code", "cursor_pos", "detail_level"],
    MsgType.is_complete_request: ["code"],
    MsgType.history_request: [*_HISTORY, "unique"],
    MsgType.comm_info_request: ["target_name"],
    MsgType.comm_open: [*_COMM, "target_name"],
    MsgType.comm_msg: _COMM,
    MsgType.comm_close: _COMM,
    MsgType.shutdown_request: ["restart"],
    MsgType.delete_subshell_request: ["subshell_id"],
}
"""The content fields of each request type, as the protocol names them."""

RIGHT_METADATA: dict[str, st.SearchStrategy[Any]] = {
    "tags": st.lists(st.sampled_from(["thread", "task", "queue", "suppress-error"]) | text),
    "cellId": text,
    "run_mode": st.sampled_from(["thread", "task", "##queue", "blocking"]) | text,
    "timeout": st.sampled_from([None, 0, -1, 1e9, 30, "soon"]),
    "extra": json_values,
}
RIGHT_HEADER: dict[str, st.SearchStrategy[Any]] = {
    "subshell_id": st.none() | st.just(""),
    "version": st.sampled_from(["5.3", "5.5", "9"]),
    "run_mode": st.sampled_from(["thread", "task", "queue", "blocking"]) | text,
    "extra": json_values,
}
ODD_HEADER = ["subshell_id", "msg_id", "session", "username", "date", "version"]
broken_frames = st.sampled_from(
    [
        b"",
        b"{",
        b"[1, 2]",
        b'"text"',
        b"42",
        b"null",
        b'{"code": "\\ud800"}',  # a lone surrogate: orjson refuses it
        b'{"code": "\xed\xa0\x80"}',
        b'{"code": "\xff"}',
        b'{"a": ' + b"[" * 1100 + b"]" * 1100 + b"}",  # deeper than orjson decodes
    ]
)
non_objects = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | text
    | st.lists(json_values, max_size=3)
).map(orjson.dumps)


def some_of(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """Some of `fields`, each with a value of its strategy."""
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=len(fields)))
    return {name: draw(fields[name]) for name in chosen}


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, MsgType, list[bytes], dict[str, Any]]:
    """A channel, a msg_type, its four JSON frames and its header (without the `test_tag`).

    Half are sound (every field of the right type, edge values included), so that handlers
    run; three in ten have exactly one thing odd; the rest are odd wherever they like.
    """
    msg_type = draw(st.sampled_from(MSG_TYPES + HANDLERS_THAT_READ_CONTENT))
    takes = [c for c in ("shell", "control") if (Channel(c), msg_type) in DEFAULT_RUN_MODES]
    channel = draw(st.sampled_from(takes * 4 + ["shell", "control"]))
    mode = draw(st.sampled_from(["sound"] * 5 + ["one odd"] * 3 + ["chaos"] * 2))
    if msg_type is MsgType.shutdown_request and channel == "control":
        mode = "bad shutdown"  # a sound one would stop the kernel
    names = CONTENT_FIELDS.get(msg_type, [])
    required = [n for n in ("code", "comm_id", "target_name") if n in names]
    content = {n: draw(RIGHT[n]) for n in required} | some_of(
        draw, {n: RIGHT[n] for n in [*names, "extra"]}
    )
    meta = some_of(draw, RIGHT_METADATA) if msg_type is MsgType.execute_request else {}
    header = {"msg_type": msg_type.value, **some_of(draw, RIGHT_HEADER)}
    # The frames after the header, in order; None until one is drawn odd.
    frames: dict[str, bytes | None] = dict.fromkeys(("parent", "metadata", "content"))
    odd_frame = st.sampled_from([broken_frames, non_objects]).flatmap(lambda s: s)
    match mode:
        case "bad shutdown":
            frames["content"] = draw(
                odd_frame
                | odd.filter(lambda v: not isinstance(v, bool)).map(
                    lambda v: orjson.dumps({"restart": v})
                )
            )
        case "one odd":
            where = draw(st.sampled_from(["content field", "frame", "metadata field", "header"]))
            if where == "content field" and names:
                content[draw(st.sampled_from(names))] = draw(odd)
            elif where == "metadata field":
                # Not `timeout`: a tiny one would race the cell's end with an interrupt.
                meta[draw(st.sampled_from(["tags", "cellId", "run_mode"]))] = draw(odd)
            elif where == "header":
                header[draw(st.sampled_from(ODD_HEADER))] = draw(odd)
            else:
                frames[draw(st.sampled_from(sorted(frames)))] = draw(odd_frame)
        case "chaos":
            for name in names:
                if draw(st.booleans()):
                    content[name] = draw(odd)
            header |= draw(st.fixed_dictionaries({}, optional=dict.fromkeys(ODD_HEADER, odd)))
            for name in frames:
                if draw(st.integers(0, 3)) == 0:
                    frames[name] = draw(odd_frame)
        case _:
            pass
    defaults = {
        "parent": draw(st.dictionaries(text, json_values, max_size=2)),
        "metadata": meta,
        "content": content,
    }
    parts = [orjson.dumps(header)]
    parts += [orjson.dumps(defaults[n]) if f is None else f for n, f in frames.items()]
    event(f"drawn: {mode}")
    return channel, msg_type, parts, header


def test_every_known_msg_type_is_fuzzed() -> None:
    taken = {msg_type for _, msg_type in DEFAULT_RUN_MODES}
    assert taken == set(MSG_TYPES)
    assert {channel for channel, _ in DEFAULT_RUN_MODES} == {Channel.shell, Channel.control}


@FUZZ
@given(request=requests(), undecodable_header=st.sampled_from([False] * 19 + [True]))
def test_every_signed_request_is_answered(
    raw: RawClient,
    request: tuple[str, MsgType, list[bytes], dict[str, Any]],
    undecodable_header: bool,
) -> None:
    channel, msg_type, parts, header = request
    if undecodable_header:  # nothing to reply to: dropped, and the kernel carries on
        raw.send_frames(channel, b'["not", "a", "header"]', *parts[1:])
        event("dropped: no header")
        return
    header = raw.header(msg_type.value) | header | {"msg_type": msg_type.value}
    tag = header["test_tag"]
    raw.send_frames(channel, orjson.dumps(header), *parts[1:])
    is_request = msg_type.value.endswith("_request")
    answer = raw.wait_done(tag, reply=is_request)
    assert answer.states[0] == "busy"
    assert answer.states[-1] == "idle"
    if not is_request:
        event("no reply due: busy and idle")
        return
    assert answer.reply is not None
    reply = answer.reply
    assert reply["header"]["msg_type"] == msg_type.removesuffix("_request") + "_reply"
    content = reply["content"]
    if msg_type is MsgType.shutdown_request:
        assert content["status"] == "error", "a shutdown meant to be refused was not"
    statuses = {"ok", "error", "aborted"}
    if msg_type is MsgType.is_complete_request:
        statuses = {"complete", "incomplete", "invalid", "unknown", "error"}
    assert content["status"] in statuses, content
    if content["status"] == "error":
        assert isinstance(content["ename"], str)
        assert isinstance(content["evalue"], str)
        assert content["ename"], content
        event(f"error: {content['ename']}")
    else:
        event(content["status"])


def test_the_kernel_still_answers(raw: RawClient) -> None:
    for channel in ("shell", "control"):
        tag = raw.send(channel, "kernel_info_request")
        reply = raw.wait_done(tag).reply
        assert reply is not None
        assert reply["content"]["status"] == "ok"
        tag = raw.send(channel, "execute_request", {"code": "6 * 7", "silent": False})
        answer = raw.wait_done(tag)
        assert answer.reply is not None
        assert answer.reply["content"]["status"] == "ok"
        results = [m for m in answer.iopub if m["header"]["msg_type"] == "execute_result"]
        assert results[0]["content"]["data"]["text/plain"] == "42"
    # The subshells the fuzz created can be listed and deleted.
    tag = raw.send("control", "list_subshell_request")
    reply = raw.wait_done(tag).reply
    assert reply is not None
    for subshell_id in reply["content"]["subshell_id"]:
        tag = raw.send("control", "delete_subshell_request", {"subshell_id": subshell_id})
        deleted = raw.wait_done(tag).reply
        assert deleted is not None
        assert deleted["content"]["status"] == "ok"


@pytest.mark.parametrize("kernel_name", ["async", "async-trio"])
def test_a_shutdown_with_odd_extras_still_shuts_down(kernel_name: str) -> None:
    """Extra fields are not malformed: the shutdown is answered and the kernel exits."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=60)
    kc.stop_channels()
    raw = RawClient(km.get_connection_info())
    try:
        process = km.provisioner.process  # type: ignore[union-attr]
        tag = raw.send(
            "control",
            "shutdown_request",
            {"restart": False, "extra": [1, {"x": None}], "": "?"},
            metadata={"odd": [1.5, "x"], "tags": ["thread"]},
            header={"run_mode": 5, "extra": {"a": []}},
        )
        answer = raw.wait_done(tag)
        assert answer.reply is not None
        assert answer.reply["content"] == {"status": "ok", "restart": False}
        assert process.wait(timeout=30) == 0
    finally:
        raw.close()
        if km.has_kernel:
            km.shutdown_kernel(now=True)
