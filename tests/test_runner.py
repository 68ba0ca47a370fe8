"""Unit tests of `async_kernel.requests._runner`: whatever a handler does, a reply and idle."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from async_kernel._enums import Channel, MsgType
from async_kernel.requests._runner import JobRunner
from async_kernel.wire._job import Job, error_content
from async_kernel.wire._session import Message

pytestmark = pytest.mark.anyio

REQUESTS = [t for t in MsgType if t.value.endswith("_request")]
OTHERS = [t for t in MsgType if not t.value.endswith("_request")]


class FakeOutbox:
    """Records what the runner sends, in order."""

    def __init__(self, *, refuse: int = 0) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.how: list[tuple[str, str]] = []
        """(what was sent, how: `held` for the message that follows, `soon` or `now`)."""
        self.refuse = refuse  # how many replies fail to encode

    def status(self, job: Job, state: str, *, held: bool = False, soon: bool = False) -> None:
        self.sent.append(("status", state))
        self.how.append((state, "held" if held else "soon" if soon else "now"))

    def reply(
        self,
        job: Job,
        msg_type: str,
        content: dict[str, Any],
        metadata: Any = None,
        *,
        held: bool = False,
    ) -> None:
        if self.refuse:
            self.refuse -= 1
            raise TypeError("str is not valid UTF-8: surrogates not allowed")
        self.sent.append((msg_type, content))
        self.how.append(("reply", "held" if held else "now"))


class Failing:
    """Handlers, named like every msg_type, that all raise (sync and async alike)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __getattr__(self, name: str) -> Any:
        if name not in MsgType.__members__:
            raise AttributeError(name)
        exc = self.exc
        if name in {"execute_request", "shutdown_request"}:

            async def handler(job: Job) -> Any:
                await anyio.lowlevel.checkpoint()
                raise exc

        else:

            def handler(job: Job) -> Any:
                raise exc

        return handler


def job_of(msg_type: str, content: Any = None) -> Job:
    header = {"msg_id": "m", "msg_type": msg_type}
    return Job(Message(header, {}, {}, content or {}), Channel.shell)


EXCEPTIONS = [
    TypeError("'int' object is not subscriptable"),
    ValueError("invalid literal for int() with base 10: 'three'"),
    KeyError("code"),
    RecursionError("maximum recursion depth exceeded"),
]


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("msg_type", REQUESTS)
async def test_a_failing_handler_gets_an_error_reply(msg_type: MsgType, exc: Exception) -> None:
    outbox = FakeOutbox()
    runner = JobRunner(outbox, Failing(exc))  # type: ignore[arg-type]
    job = job_of(msg_type)
    if runner.is_sync(job):
        runner.run_now(job)
    else:
        await runner.run(job)
    reply_type = msg_type.removesuffix("_request") + "_reply"
    assert outbox.sent == [
        ("status", "busy"),
        (reply_type, {"status": "error", **error_content(type(exc).__name__, str(exc))}),
        ("status", "idle"),
    ]


@pytest.mark.parametrize("msg_type", OTHERS)
async def test_a_failing_handler_of_a_message_without_reply_still_gets_idle(
    msg_type: MsgType,
) -> None:
    outbox = FakeOutbox()
    runner = JobRunner(outbox, Failing(TypeError("unhashable type: 'list'")))  # type: ignore[arg-type]
    await runner.run(job_of(msg_type))
    assert outbox.sent == [("status", "busy"), ("status", "idle")]


async def test_a_reply_that_cannot_be_encoded_becomes_an_error_reply() -> None:
    class Handlers:
        def kernel_info_request(self, job: Job) -> dict[str, Any]:
            return {"status": "ok", "text": "\ud800"}

    outbox = FakeOutbox(refuse=1)
    runner = JobRunner(outbox, Handlers())  # type: ignore[arg-type]
    await runner.run(job_of("kernel_info_request"))
    assert outbox.sent[0] == ("status", "busy")
    assert outbox.sent[1][0] == "kernel_info_reply"
    content = outbox.sent[1][1]
    assert content["status"] == "error"
    assert content["ename"] == "TypeError"
    assert "the reply could not be sent" in content["evalue"]
    assert outbox.sent[2] == ("status", "idle")


async def test_a_rejected_job_gets_its_error_without_running() -> None:
    outbox = FakeOutbox()
    runner = JobRunner(outbox, Failing(AssertionError("must not run")))  # type: ignore[arg-type]
    job = job_of("execute_request")
    job.reject = error_content("MalformedMessage", "malformed execute_request: the content ...")
    assert runner.is_sync(job)
    runner.run_now(job)
    assert outbox.sent == [
        ("status", "busy"),
        ("execute_reply", {"status": "error", **job.reject}),
        ("status", "idle"),
    ]


@pytest.mark.parametrize(
    ("msg_type", "content", "busy"),
    [
        ("kernel_info_request", {}, "held"),
        ("execute_request", {"code": "pass"}, "held"),  # its execute_input follows at once
        ("execute_request", {"code": "pass", "silent": True}, "soon"),
        ("complete_request", {"code": "x", "cursor_pos": 1}, "soon"),  # may take long
        ("comm_msg", {"comm_id": "c", "data": {}}, "soon"),  # runs the user's handler
    ],
)
async def test_busy_waits_for_the_next_message_only_when_it_follows_at_once(
    msg_type: str, content: dict[str, Any], busy: str
) -> None:
    """A held message goes with the thread's next one, a `soon` one within a moment; `idle`
    always goes at once."""
    outbox = FakeOutbox()
    runner = JobRunner(outbox, Failing(ValueError("x")))  # type: ignore[arg-type]
    job = job_of(msg_type, content)
    if runner.is_sync(job):
        runner.run_now(job)
    else:
        await runner.run(job)
    expected = [("busy", busy), ("idle", "now")]
    if msg_type.endswith("_request"):
        expected.insert(1, ("reply", "held"))
    assert outbox.how == expected
