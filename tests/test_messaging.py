"""The messaging protocol over a real kernel process: what `jupyter_kernel_test` does not cover.

Bad frames, unknown requests, the details of `execute_request` (outputs, errors, silent runs,
aborts), `is_complete`, `history`, top-level await, stdin, comms, shutdown and the death of the
parent process. Each kernel is shared by the tests of this module (the `kernel` fixture of
`conftest.py`, on asyncio and on trio); every wait has a deadline.
"""

from __future__ import annotations

import collections
import datetime
import re
import signal
import time
import uuid
from queue import Empty
from typing import TYPE_CHECKING, Any

import pytest
import zmq
from jupyter_client.manager import KernelManager
from jupyter_client.session import Session as ClientSession
from kernel_process import gone, launched_kernel, wait_gone

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from jupyter_client.blocking.client import BlockingKernelClient

TIMEOUT = 10.0
"""Seconds any single wait may take."""

BACKENDS = {"async": "asyncio", "async-trio": "trio"}


class Talk:
    """A blocking client that keeps replies and iopub messages apart by request.

    Messages read while waiting for one request are kept for the request they belong to, so
    tests can have several requests in flight.
    """

    def __init__(self, km: KernelManager, kc: BlockingKernelClient) -> None:
        self.km = km
        self.kc = kc
        self.session: ClientSession = kc.session
        self._replies: dict[str, dict[str, Any]] = {}
        self._iopub: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)

    @property
    def backend(self) -> str:
        return BACKENDS[self.km.kernel_name]

    # --- sending -----------------------------------------------------------------------------

    def send(
        self,
        msg_type: str,
        content: dict[str, Any] | None = None,
        *,
        channel: str = "shell",
        metadata: dict[str, Any] | None = None,
        parent: dict[str, Any] | None = None,
        buffers: list[bytes] | None = None,
    ) -> str:
        msg = self.session.msg(msg_type, content or {}, parent=parent, metadata=metadata)
        if buffers:
            msg["buffers"] = buffers
        getattr(self.kc, f"{channel}_channel").send(msg)
        return msg["header"]["msg_id"]

    def execute(self, code: str, **content: Any) -> str:
        metadata = content.pop("metadata", None)
        full = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
            **content,
        }
        return self.send("execute_request", full, metadata=metadata)

    # --- receiving ---------------------------------------------------------------------------

    def reply(self, msg_id: str, *, channel: str = "shell", timeout: float = TIMEOUT) -> dict:
        """Return the reply to `msg_id`, keeping other replies for later."""
        get = getattr(self.kc, f"get_{channel}_msg")
        deadline = time.monotonic() + timeout
        while msg_id not in self._replies:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no reply to {msg_id} on {channel} in {timeout}s")
            try:
                msg = get(timeout=remaining)
            except Empty:
                continue
            self._replies[msg["parent_header"].get("msg_id", "")] = msg
        return self._replies.pop(msg_id)

    def iopub(self, msg_id: str, *, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Return the iopub messages of `msg_id`, from `busy` up to and including `idle`."""
        deadline = time.monotonic() + timeout
        while not any(_is_idle(m) for m in self._iopub.get(msg_id, ())):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [m["msg_type"] for m in self._iopub.get(msg_id, ())]
                raise TimeoutError(f"no idle for {msg_id} in {timeout}s (saw {seen})")
            try:
                msg = self.kc.get_iopub_msg(timeout=remaining)
            except Empty:
                continue
            self._iopub[msg["parent_header"].get("msg_id", "")].append(msg)
        return self._iopub.pop(msg_id)

    def wait_iopub(
        self, msg_id: str, match: Callable[[dict[str, Any]], bool], *, timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """Return (and consume) the first iopub message of `msg_id` that `match`es."""
        deadline = time.monotonic() + timeout
        while True:
            kept = self._iopub.get(msg_id, [])
            for i, msg in enumerate(kept):
                if match(msg):
                    del kept[i]
                    return msg
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [m["msg_type"] for m in kept]
                raise TimeoutError(f"no matching iopub message for {msg_id} (saw {seen})")
            try:
                msg = self.kc.get_iopub_msg(timeout=remaining)
            except Empty:
                continue
            self._iopub[msg["parent_header"].get("msg_id", "")].append(msg)

    def run(self, code: str, **content: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Execute `code`; return the reply and the iopub messages other than status."""
        msg_id = self.execute(code, **content)
        reply = self.reply(msg_id)
        return reply, outputs(self.iopub(msg_id))

    def request(
        self, msg_type: str, content: dict[str, Any] | None = None, *, channel: str = "shell"
    ) -> dict[str, Any]:
        msg_id = self.send(msg_type, content, channel=channel)
        reply = self.reply(msg_id, channel=channel)
        self.iopub(msg_id)
        return reply

    def stdin_request(self, msg_id: str, *, timeout: float = TIMEOUT) -> dict[str, Any]:
        msg = self.kc.get_stdin_msg(timeout=timeout)
        assert msg["msg_type"] == "input_request"
        assert msg["parent_header"]["msg_id"] == msg_id
        return msg


def _is_idle(msg: dict[str, Any]) -> bool:
    return msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"


def outputs(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in msgs if m["msg_type"] != "status"]


def of_type(msgs: list[dict[str, Any]], msg_type: str) -> list[dict[str, Any]]:
    return [m for m in msgs if m["msg_type"] == msg_type]


def stdout(msgs: list[dict[str, Any]]) -> str:
    return "".join(
        m["content"]["text"] for m in of_type(msgs, "stream") if m["content"]["name"] == "stdout"
    )


@pytest.fixture(scope="module")
def talk(kernel: tuple[KernelManager, BlockingKernelClient]) -> Talk:
    km, kc = kernel
    return Talk(km, kc)


# --- bad input --------------------------------------------------------------------------------


def _url(info: dict[str, Any], channel: str) -> str:
    port = info[f"{channel}_port"]
    if info["transport"] == "ipc":
        return f"ipc://{info['ip']}-{port}"
    return f"tcp://{info['ip']}:{port}"


@pytest.mark.parametrize("channel", ["shell", "control"])
def test_bad_frames_are_dropped_and_the_kernel_keeps_answering(talk: Talk, channel: str) -> None:
    info = talk.km.get_connection_info()
    session = ClientSession(key=info["key"], signature_scheme=info["signature_scheme"])

    def frames(msg_type: str = "kernel_info_request") -> tuple[str, list[bytes]]:
        msg = session.msg(msg_type)
        return msg["header"]["msg_id"], session.serialize(msg)

    def signed(header: bytes) -> tuple[str, list[bytes]]:
        """A correctly signed message around a header frame that cannot be decoded."""
        parts = [header, b"{}", b"{}", b"{}"]
        return uuid.uuid4().hex, [b"<IDS|MSG>", session.sign(parts), *parts]

    other = ClientSession(key=b"not-the-key", signature_scheme="hmac-sha256")
    bad: dict[str, list[bytes]] = {}
    msg_id, f = frames()
    bad[msg_id] = [f[0], b"0" * 64, *f[2:]]  # wrong signature
    msg_id, f = frames()
    bad[msg_id] = [f[0], b"", *f[2:]]  # unsigned
    msg = other.msg("kernel_info_request")
    bad[msg["header"]["msg_id"]] = other.serialize(msg)  # signed with another key
    msg_id, f = frames()
    bad[msg_id] = f[:4]  # truncated
    msg_id, f = frames()
    bad[msg_id] = f[1:]  # no delimiter
    for header in (b'{"not": json', b"[1, 2]", b"\xff\xfe\xfd", b'{"msg_id": "no type"}'):
        msg_id, f = signed(header)  # nothing to reply to
        bad[msg_id] = f

    replayed_id, replayed = frames()
    final_id, final = frames()

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(_url(info, channel))
        sock.send_multipart(replayed)
        sock.send_multipart([b"only one frame"])
        for f in bad.values():
            sock.send_multipart(f)
        sock.send_multipart(replayed)  # the same frames again: a replay
        sock.send_multipart(final)
        # kernel_info requests run blocking, one after the other: a reply to a bad message
        # would come before the reply to the final one.
        answered: list[str] = []
        deadline = time.monotonic() + TIMEOUT
        while final_id not in answered:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no reply to the final request (got {answered})"
            if not sock.poll(int(remaining * 1000)):
                continue
            _, msg_list = session.feed_identities(sock.recv_multipart())
            reply = session.deserialize(msg_list)
            assert reply["msg_type"] == "kernel_info_reply"
            answered.append(reply["parent_header"]["msg_id"])
        assert answered == [replayed_id, final_id]
    finally:
        sock.close()
        ctx.term()
    # The regular client still gets answers too.
    assert talk.request("kernel_info_request")["content"]["status"] == "ok"


def test_unknown_request_gets_an_error_reply(talk: Talk) -> None:
    msg_id = talk.send("foo_request", {"x": 1})
    reply = talk.reply(msg_id)
    assert reply["msg_type"] == "foo_reply"
    assert reply["content"]["status"] == "error"
    assert "foo_request" in reply["content"]["evalue"]
    assert isinstance(reply["content"]["ename"], str)
    states = [m["content"]["execution_state"] for m in talk.iopub(msg_id)]
    assert states == ["busy", "idle"]
    assert talk.request("kernel_info_request")["content"]["status"] == "ok"


def test_control_requests_are_refused_on_shell(talk: Talk) -> None:
    """A `shutdown_request` on shell must not stop the kernel."""
    msg_id = talk.send("shutdown_request", {"restart": False})
    reply = talk.reply(msg_id)
    assert reply["msg_type"] == "shutdown_reply"
    assert reply["content"]["status"] == "error"
    talk.iopub(msg_id)
    reply, _ = talk.run("'still here'")
    assert reply["content"]["status"] == "ok"
    assert talk.km.is_alive()


def test_unknown_message_that_is_not_a_request_gets_no_reply(talk: Talk) -> None:
    msg_id = talk.send("foo_event", {})
    # Both run blocking, in arrival order: a reply to the first would come before the second's.
    assert talk.request("kernel_info_request")["content"]["status"] == "ok"
    assert msg_id not in talk._replies


# --- execute ----------------------------------------------------------------------------------


def test_execute_input_and_result(talk: Talk) -> None:
    msg_id = talk.execute("print('out'); 6 * 7")
    reply = talk.reply(msg_id)
    msgs = talk.iopub(msg_id)
    assert [m["content"]["execution_state"] for m in of_type(msgs, "status")] == ["busy", "idle"]
    assert msgs[0]["msg_type"] == "status"
    assert _is_idle(msgs[-1])
    count = reply["content"]["execution_count"]
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["user_expressions"] == {}
    assert reply["content"]["payload"] == []
    (inp,) = of_type(msgs, "execute_input")
    assert inp["content"] == {"code": "print('out'); 6 * 7", "execution_count": count}
    assert msgs[1] is inp  # right after busy
    (result,) = of_type(msgs, "execute_result")
    assert result["content"]["execution_count"] == count
    assert result["content"]["data"]["text/plain"] == "42"
    assert stdout(msgs) == "out\n"
    # The print comes before the result.
    types = [m["msg_type"] for m in msgs]
    assert types.index("stream") < types.index("execute_result")


def test_execution_count_advances(talk: Talk) -> None:
    first, _ = talk.run("1")
    second, _ = talk.run("2")
    assert second["content"]["execution_count"] == first["content"]["execution_count"] + 1


def test_reply_metadata(talk: Talk) -> None:
    before = datetime.datetime.now(datetime.UTC)
    reply, _ = talk.run("1")
    started = datetime.datetime.fromisoformat(reply["metadata"]["started"])
    assert started.tzinfo is not None
    assert before - datetime.timedelta(seconds=5) <= started
    assert started <= datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=5)
    assert reply["metadata"]["status"] == "ok"
    error, _ = talk.run("1/0")
    assert error["metadata"]["status"] == "error"


def test_display_update_and_clear_output(talk: Talk) -> None:
    code = (
        "from IPython.display import display, clear_output\n"
        "h = display('first', display_id=True)\n"
        "h.update('second')\n"
        "display({'text/markdown': '*md*'}, raw=True, metadata={'k': 1})\n"
        "clear_output(wait=True)\n"
        "print('after')\n"
    )
    reply, msgs = talk.run(code)
    assert reply["content"]["status"] == "ok"
    types = [m["msg_type"] for m in msgs if m["msg_type"] != "execute_input"]
    assert types == [
        "display_data",
        "update_display_data",
        "display_data",
        "clear_output",
        "stream",
    ]
    shown, updated, markdown = (
        of_type(msgs, "display_data")[0],
        *of_type(msgs, "update_display_data"),
        of_type(msgs, "display_data")[1],
    )
    display_id = shown["content"]["transient"]["display_id"]
    assert display_id
    assert shown["content"]["data"] == {"text/plain": "'first'"}
    assert updated["content"]["transient"]["display_id"] == display_id
    assert updated["content"]["data"] == {"text/plain": "'second'"}
    assert markdown["content"]["data"] == {"text/markdown": "*md*"}
    assert markdown["content"]["metadata"] == {"k": 1}
    (clear,) = of_type(msgs, "clear_output")
    assert clear["content"] == {"wait": True}
    assert stdout(msgs) == "after\n"


def test_error_reply_and_traceback(talk: Talk) -> None:
    reply, msgs = talk.run("def f():\n    return 1 / 0\nf()")
    content = reply["content"]
    assert content["status"] == "error"
    assert content["ename"] == "ZeroDivisionError"
    assert "division by zero" in content["evalue"]
    assert content["traceback"]
    assert all(isinstance(line, str) for line in content["traceback"])
    plain = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(content["traceback"]))
    assert "return 1 / 0" in plain
    assert isinstance(content["execution_count"], int)
    (error,) = of_type(msgs, "error")
    assert error["content"]["ename"] == "ZeroDivisionError"
    assert error["content"]["traceback"] == content["traceback"]
    assert not of_type(msgs, "execute_result")


def test_syntax_error(talk: Talk) -> None:
    reply, msgs = talk.run("x = = 1")
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "SyntaxError"
    assert of_type(msgs, "error")
    assert talk.run("1")[0]["content"]["status"] == "ok"


def test_user_expressions(talk: Talk) -> None:
    talk.run("ux_value = 21")
    reply, _ = talk.run(
        "ux_value *= 2",
        user_expressions={"double": "ux_value", "bad": "1/0", "missing": "no_such_name"},
    )
    exprs = reply["content"]["user_expressions"]
    assert exprs["double"]["status"] == "ok"
    assert exprs["double"]["data"]["text/plain"] == "42"
    assert exprs["bad"]["status"] == "error"
    assert exprs["bad"]["ename"] == "ZeroDivisionError"
    assert exprs["missing"]["status"] == "error"
    assert exprs["missing"]["ename"] == "NameError"


def test_silent(talk: Talk) -> None:
    before, _ = talk.run("1")
    reply, msgs = talk.run("print('quiet'); silent_var = 5; 99", silent=True)
    assert reply["content"]["status"] == "ok"
    assert not of_type(msgs, "execute_input")
    assert not of_type(msgs, "execute_result")
    assert stdout(msgs) == "quiet\n"  # output is not suppressed, only the bookkeeping
    after, msgs = talk.run("silent_var")
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "5"
    assert after["content"]["execution_count"] == before["content"]["execution_count"] + 1


def test_store_history_false(talk: Talk) -> None:
    marker = f"nohist_{uuid.uuid4().hex[:12]}"
    before, _ = talk.run("1")
    reply, _ = talk.run(f"{marker} = 1", store_history=False)
    assert reply["content"]["status"] == "ok"
    after, _ = talk.run("2")
    assert after["content"]["execution_count"] == before["content"]["execution_count"] + 1
    hist = talk.request(
        "history_request",
        {"hist_access_type": "search", "pattern": f"{marker}*", "raw": True, "output": False},
    )
    assert hist["content"]["history"] == []


def test_stop_on_error_aborts_the_queued_requests(talk: Talk) -> None:
    # The failing cell waits for input, so the later requests are surely queued behind it: the
    # kernel_info reply proves the kernel has received them (one socket, in order).
    failing = talk.execute("input('go'); 1/0", allow_stdin=True)
    request = talk.stdin_request(failing)
    queued = [talk.execute("'first queued'"), talk.execute("'second queued'")]
    talk.request("kernel_info_request")
    talk.send("input_reply", {"status": "ok", "value": ""}, channel="stdin", parent=request)
    error = talk.reply(failing)
    assert error["content"]["status"] == "error"
    assert error["content"]["ename"] == "ZeroDivisionError"
    for msg_id in queued:
        reply = talk.reply(msg_id)
        assert reply["content"]["status"] == "aborted"
        assert reply["metadata"]["status"] == "aborted"
        msgs = talk.iopub(msg_id)
        assert not of_type(msgs, "execute_result")
        assert not of_type(msgs, "execute_input")
    talk.iopub(failing)
    reply, msgs = talk.run("'runs again'")
    assert reply["content"]["status"] == "ok"
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "'runs again'"
    # The aborted cells never ran, so they took no execution count.
    assert reply["content"]["execution_count"] == error["content"]["execution_count"] + 1


def test_no_abort_without_stop_on_error(talk: Talk) -> None:
    failing = talk.execute("input('go'); 1/0", allow_stdin=True, stop_on_error=False)
    request = talk.stdin_request(failing)
    queued = talk.execute("'not aborted'")
    talk.request("kernel_info_request")
    talk.send("input_reply", {"status": "ok", "value": ""}, channel="stdin", parent=request)
    assert talk.reply(failing)["content"]["status"] == "error"
    assert talk.reply(queued)["content"]["status"] == "ok"
    talk.iopub(failing)
    talk.iopub(queued)


def test_pager_payload(talk: Talk) -> None:
    reply, msgs = talk.run("zip?")
    assert reply["content"]["status"] == "ok"
    (payload,) = reply["content"]["payload"]
    assert payload["source"] == "page"
    assert "zip" in payload["data"]["text/plain"]
    assert isinstance(payload.get("start", 0), int)
    assert not of_type(msgs, "execute_result")
    # The payload belongs to that request only.
    assert talk.run("1")[0]["content"]["payload"] == []


def test_set_next_input_payload(talk: Talk) -> None:
    reply, _ = talk.run("get_ipython().set_next_input('next cell')")
    (payload,) = reply["content"]["payload"]
    assert payload["source"] == "set_next_input"
    assert payload["text"] == "next cell"


def test_top_level_await(talk: Talk) -> None:
    code = "import anyio, sniffio\nawait anyio.sleep(0)\nsniffio.current_async_library()"
    reply, msgs = talk.run(code)
    assert reply["content"]["status"] == "ok", reply["content"]
    (result,) = of_type(msgs, "execute_result")
    assert result["content"]["data"]["text/plain"] == repr(talk.backend)


def test_top_level_async_for_and_with(talk: Talk) -> None:
    code = (
        "import contextlib\n"
        "@contextlib.asynccontextmanager\n"
        "async def cm():\n    yield 2\n"
        "async def gen():\n    yield 1\n    yield 2\n"
        "async with cm() as two:\n    total = [x async for x in gen()]\n"
        "sum(total) * two"
    )
    reply, msgs = talk.run(code)
    assert reply["content"]["status"] == "ok", reply["content"]
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "6"


@pytest.mark.parametrize(
    "code",
    ["# threading demo\nimport threading", "##threads\nimport threading", "import threading"],
)
def test_comments_that_look_like_modes_run_normally(talk: Talk, code: str) -> None:
    reply, msgs = talk.run(code + "\nthreading.current_thread().name")
    assert reply["content"]["status"] == "ok"
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "'MainThread'"


@pytest.mark.parametrize("first_line", ["##thread", "RunMode.thread"])
def test_thread_mode_first_line(talk: Talk, first_line: str) -> None:
    reply, msgs = talk.run(f"{first_line}\nimport threading\nthreading.current_thread().name")
    assert reply["content"]["status"] == "ok", reply["content"]
    name = of_type(msgs, "execute_result")[-1]["content"]["data"]["text/plain"]
    assert name != "'MainThread'"
    assert not of_type(msgs, "error")


# --- is_complete and history --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "indent"),
    [
        ("x = 1", "complete", None),
        ("for i in range(3):", "incomplete", "    "),
        ("if True:\n  if True:", "incomplete", "      "),
        ("x = [1,", "incomplete", ""),
        ("x = 1]", "invalid", None),
        ("%time 1", "complete", None),
    ],
)
def test_is_complete(talk: Talk, code: str, status: str, indent: str | None) -> None:
    reply = talk.request("is_complete_request", {"code": code})
    assert reply["content"]["status"] == status
    if indent is None:
        assert "indent" not in reply["content"]
    else:
        assert reply["content"]["indent"] == indent


def test_history_tail_range_and_search(talk: Talk) -> None:
    marker = f"hist_{uuid.uuid4().hex[:12]}"
    codes = [f"{marker}_a = 1", f"{marker}_b = 2", f"{marker}_a + {marker}_b"]
    counts = [talk.run(code)[0]["content"]["execution_count"] for code in codes]

    tail = talk.request(
        "history_request", {"hist_access_type": "tail", "n": 3, "raw": True, "output": False}
    )["content"]
    assert tail["status"] == "ok"
    assert [entry[2] for entry in tail["history"]] == codes
    assert [entry[1] for entry in tail["history"]] == counts
    session = tail["history"][0][0]
    assert session > 0

    with_output = talk.request(
        "history_request", {"hist_access_type": "tail", "n": 1, "raw": True, "output": True}
    )["content"]["history"]
    assert with_output[0][2][0] == codes[2]

    ranged = talk.request(
        "history_request",
        {
            "hist_access_type": "range",
            "session": 0,  # the current session
            "start": counts[1],
            "stop": counts[2] + 1,
            "raw": True,
            "output": False,
        },
    )["content"]["history"]
    assert ranged == [[session, counts[1], codes[1]], [session, counts[2], codes[2]]]

    by_number = talk.request(
        "history_request",
        {
            "hist_access_type": "range",
            "session": session,
            "start": counts[0],
            "stop": counts[0] + 1,
            "raw": True,
            "output": False,
        },
    )["content"]["history"]
    assert by_number == [[session, counts[0], codes[0]]]

    found = talk.request(
        "history_request",
        {"hist_access_type": "search", "pattern": f"{marker}_?*", "raw": True, "output": False},
    )["content"]["history"]
    assert sorted(entry[2] for entry in found) == sorted(codes)
    talk.run(codes[0])
    unique = talk.request(
        "history_request",
        {
            "hist_access_type": "search",
            "pattern": f"{marker}_a = *",
            "unique": True,
            "raw": True,
            "output": False,
        },
    )["content"]["history"]
    assert [entry[2] for entry in unique] == [codes[0]]


def test_history_bad_access_type(talk: Talk) -> None:
    reply = talk.request("history_request", {"hist_access_type": "sideways"})
    assert reply["content"]["status"] == "error"
    assert talk.request("kernel_info_request")["content"]["status"] == "ok"


# --- stdin ------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_status", [True, False], ids=["status", "no-status"])
def test_input_round_trip(talk: Talk, with_status: bool) -> None:
    msg_id = talk.execute("answer = input('your name? ')\nprint(repr(answer))", allow_stdin=True)
    request = talk.stdin_request(msg_id)
    assert request["content"]["prompt"] == "your name? "
    assert not request["content"]["password"]
    if with_status:
        content = {"status": "ok", "value": "Ada Lovelace"}
        talk.send("input_reply", content, channel="stdin", parent=request)
    else:
        talk.kc.input("Ada Lovelace")  # jupyter_client's own: no status, no parent
    reply = talk.reply(msg_id)
    assert reply["content"]["status"] == "ok"
    assert stdout(outputs(talk.iopub(msg_id))) == "'Ada Lovelace'\n"


def test_getpass_round_trip(talk: Talk) -> None:
    msg_id = talk.execute("import getpass\nsecret = getpass.getpass('pw: ')", allow_stdin=True)
    request = talk.stdin_request(msg_id)
    assert request["content"]["prompt"] == "pw: "
    assert request["content"]["password"]
    talk.send("input_reply", {"status": "ok", "value": "s3cr3t"}, channel="stdin", parent=request)
    assert talk.reply(msg_id)["content"]["status"] == "ok"
    talk.iopub(msg_id)
    _, msgs = talk.run("secret")
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "'s3cr3t'"


def test_input_without_allow_stdin(talk: Talk) -> None:
    reply, _ = talk.run("input('nobody answers')", allow_stdin=False)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "StdinNotImplementedError"


# --- comms ------------------------------------------------------------------------------------

ECHO_TARGET = """
import comm

def _echo_target(c, msg):
    c.send({"opened_with": msg["content"]["data"]})

    @c.on_msg
    def _echo(m):
        c.send({"echo": m["content"]["data"]}, buffers=m["buffers"])

comm.get_comm_manager().register_target("echo_target", _echo_target)
"""


def test_comm_round_trip(talk: Talk) -> None:
    reply, _ = talk.run(ECHO_TARGET)
    assert reply["content"]["status"] == "ok"
    comm_id = uuid.uuid4().hex

    def is_comm_msg(msg: dict[str, Any]) -> bool:
        return msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == comm_id

    open_id = talk.send(
        "comm_open", {"comm_id": comm_id, "target_name": "echo_target", "data": {"hello": 1}}
    )
    opened = talk.wait_iopub(open_id, is_comm_msg)
    assert opened["content"]["data"] == {"opened_with": {"hello": 1}}
    talk.iopub(open_id)

    info = talk.request("comm_info_request", {"target_name": "echo_target"})["content"]
    assert info["status"] == "ok"
    assert info["comms"] == {comm_id: {"target_name": "echo_target"}}
    everything = talk.request("comm_info_request", {})["content"]["comms"]
    assert everything[comm_id] == {"target_name": "echo_target"}

    msg_id = talk.send(
        "comm_msg", {"comm_id": comm_id, "data": {"ping": [1, 2]}}, buffers=[b"\x00\x01raw"]
    )
    echo = talk.wait_iopub(msg_id, is_comm_msg)
    assert echo["content"]["data"] == {"echo": {"ping": [1, 2]}}
    assert [bytes(b) for b in echo["buffers"]] == [b"\x00\x01raw"]
    talk.iopub(msg_id)

    close_id = talk.send("comm_close", {"comm_id": comm_id, "data": {}})
    talk.iopub(close_id)
    info = talk.request("comm_info_request", {"target_name": "echo_target"})["content"]
    assert info["comms"] == {}


VIEW_TARGET = """
import comm

def _view_target(c, msg):
    @c.on_msg
    def _echo(m):
        kinds = [(type(b).__name__, b.readonly, b.nbytes) for b in m["buffers"]]
        c.send({"kinds": kinds}, buffers=m["buffers"])

comm.get_comm_manager().register_target("view_target", _view_target)
"""


def test_comm_buffers_arrive_as_read_only_views_and_go_back_whole(talk: Talk) -> None:
    """As on ipykernel, a handler gets memoryviews; megabytes of them echo back unchanged."""
    assert talk.run(VIEW_TARGET)[0]["content"]["status"] == "ok"
    comm_id = uuid.uuid4().hex
    talk.iopub(talk.send("comm_open", {"comm_id": comm_id, "target_name": "view_target"}))
    big = bytes(range(256)) * 8192  # 2 MiB: sent and received without a copy
    msg_id = talk.send("comm_msg", {"comm_id": comm_id, "data": {}}, buffers=[b"small", big])
    echo = talk.wait_iopub(
        msg_id, lambda m: m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id
    )
    assert echo["content"]["data"] == {
        "kinds": [["memoryview", True, 5], ["memoryview", True, len(big)]]
    }
    assert [bytes(b) for b in echo["buffers"]] == [b"small", big]
    talk.iopub(msg_id)


def test_comm_open_for_an_unknown_target(talk: Talk) -> None:
    comm_id = uuid.uuid4().hex
    open_id = talk.send("comm_open", {"comm_id": comm_id, "target_name": "nowhere", "data": {}})
    closed = talk.wait_iopub(open_id, lambda m: m["msg_type"] == "comm_close")
    assert closed["content"]["comm_id"] == comm_id
    talk.iopub(open_id)
    assert comm_id not in talk.request("comm_info_request", {})["content"]["comms"]


# --- the end of a kernel -----------------------------------------------------------------------


@pytest.fixture(params=list(BACKENDS))
def own_kernel(request: pytest.FixtureRequest) -> Iterator[tuple[KernelManager, Any]]:
    """A kernel of its own, for tests that end it."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=request.param, startup_timeout=60)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        if km.has_kernel:
            km.shutdown_kernel(now=True)


def test_shutdown_request_leaves_no_process(own_kernel: tuple[KernelManager, Any]) -> None:
    km, kc = own_kernel
    process = km.provisioner.process  # type: ignore[union-attr]
    talk = Talk(km, kc)
    msg_id = talk.send("shutdown_request", {"restart": False}, channel="control")
    reply = talk.reply(msg_id, channel="control")
    assert reply["content"] == {"status": "ok", "restart": False}
    assert process.wait(timeout=TIMEOUT) == 0


@pytest.mark.parametrize("kernel_name", list(BACKENDS))
@pytest.mark.parametrize(
    "ready",
    [
        pytest.param(True, id="ready"),
        # Killed while the kernel still starts: it gets a new parent before it can watch.
        pytest.param(False, id="starting"),
    ],
)
def test_kernel_exits_when_its_parent_dies(kernel_name: str, ready: bool) -> None:
    with launched_kernel(kernel_name, ready=ready) as launched:
        assert not gone(launched.kernel_pid)
        launched.launcher.send_signal(signal.SIGKILL)
        launched.launcher.wait(TIMEOUT)
        assert wait_gone(launched.kernel_pid, 10), "the kernel outlived its parent"


def test_kernel_settings_are_in_force(kernel) -> None:
    """The GIL switch interval and the history batch size are the kernel's defaults."""
    _km, kc = kernel
    reply = kc.execute_interactive(
        "import sys",
        timeout=30,
        user_expressions={
            "switch": "sys.getswitchinterval()",
            "batch": "get_ipython().history_manager.db_cache_size",
        },
    )
    values = reply["content"]["user_expressions"]
    assert float(values["switch"]["data"]["text/plain"]) == pytest.approx(0.0002)
    assert values["batch"]["data"]["text/plain"] == "20"
