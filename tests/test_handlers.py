"""Handlers and the runner in-process, with a fake outbox that records what would be sent.

No kernel process and no sockets: the runner and the handlers receive only the narrow parts
they use (an outbox, a shell, the interrupter, ...), so a test can hand them fakes.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from async_kernel._enums import Channel
from async_kernel.callers._caller import Caller
from async_kernel.ipython._shell import AsyncInteractiveShell
from async_kernel.output._comm import KernelCommManager
from async_kernel.requests._dispatcher import Aborts
from async_kernel.requests._handlers import RequestHandlers
from async_kernel.requests._interrupts import Interrupter
from async_kernel.requests._runner import JobRunner
from async_kernel.requests._subshells import SubshellManager
from async_kernel.wire._job import Job, error_content
from async_kernel.wire._outbox import ROUTED
from async_kernel.wire._session import Message

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

pytestmark = pytest.mark.anyio

_ids = itertools.count()


@dataclass
class FakeOutbox:
    """Records every message instead of sending it."""

    session_id: str = "fake-session"
    sent: list[tuple[str, str, dict[str, Any], Job | None]] = field(
        default_factory=list[tuple[str, str, dict[str, Any], Job | None]]
    )
    """(kind, msg_type, content, parent): kind is `iopub` or `reply`."""

    def publish(
        self,
        msg_type: str,
        content: dict[str, Any],
        *,
        parent: Job | None = ROUTED,
        metadata: dict[str, Any] | None = None,
        buffers: list[bytes] | None = None,
        held: bool = False,
        soon: bool = False,
    ) -> None:
        self.sent.append(("iopub", msg_type, content, None if parent is ROUTED else parent))

    def status(self, job: Job, state: str, *, held: bool = False, soon: bool = False) -> None:
        self.publish("status", {"execution_state": state}, parent=job)

    def stream(self, name: str, text: str, parent: Job | None) -> None:
        self.publish("stream", {"name": name, "text": text}, parent=parent)

    def reply(
        self,
        job: Job,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        *,
        held: bool = False,
    ) -> None:
        self.sent.append(("reply", msg_type, content, job))

    def of(self, msg_type: str) -> list[dict[str, Any]]:
        """The contents of the messages of `msg_type`, in order."""
        return [content for _, t, content, _ in self.sent if t == msg_type]

    def reply_to(self, job: Job) -> dict[str, Any]:
        replies = [c for kind, _, c, parent in self.sent if kind == "reply" and parent is job]
        assert len(replies) == 1, self.sent
        return replies[0]

    def statuses(self, job: Job) -> list[str]:
        return [
            c["execution_state"] for _, t, c, parent in self.sent if t == "status" and parent is job
        ]


def make_job(
    msg_type: str,
    content: dict[str, Any] | None = None,
    *,
    channel: Channel = Channel.shell,
    tags: list[str] | None = None,
) -> Job:
    header = {"msg_id": f"m{next(_ids)}", "msg_type": msg_type, "session": "s"}
    metadata: dict[str, Any] = {"tags": tags} if tags else {}
    return Job(Message(header, {}, metadata, content or {}), channel)


@pytest.fixture(scope="module")
def shell() -> Iterator[AsyncInteractiveShell]:
    """One IPython shell for the module, not the process-wide singleton."""
    shell = AsyncInteractiveShell(outbox=None)
    try:
        yield shell
    finally:
        shell.history_manager.end_session()  # pyright: ignore[reportOptionalMemberAccess]


@dataclass
class Parts:
    outbox: FakeOutbox
    handlers: RequestHandlers
    runner: JobRunner
    aborts: Aborts
    stopped: list[bool]


@pytest.fixture
async def parts(
    shell: AsyncInteractiveShell, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Parts]:
    monkeypatch.setattr(sys, "displayhook", shell.displayhook)  # as the kernel's patches do
    outbox = FakeOutbox()
    shell.outbox = outbox
    shell.displayhook.outbox = outbox  # pyright: ignore[reportAttributeAccessIssue]
    shell.display_pub.outbox = outbox  # pyright: ignore[reportAttributeAccessIssue]
    stopped: list[bool] = []
    aborts = Aborts()
    async with Caller.attach(name=f"test-handlers-{next(_ids)}") as caller:
        handlers = RequestHandlers(
            shell=shell,
            outbox=outbox,  # pyright: ignore[reportArgumentType]
            interrupter=Interrupter(),
            aborts=aborts,
            subshells=SubshellManager(caller.backend),
            comms=KernelCommManager(),
            timers=caller,
            flush=lambda: None,
            stop=lambda: stopped.append(True),
            backend=caller.backend,
        )
        runner = JobRunner(outbox, handlers)  # pyright: ignore[reportArgumentType]
        yield Parts(outbox, handlers, runner, aborts, stopped)


async def run(parts: Parts, job: Job) -> dict[str, Any]:
    parts.aborts.number(job)
    await parts.runner.run(job)
    assert parts.outbox.statuses(job) == ["busy", "idle"]
    return parts.outbox.reply_to(job)


async def test_kernel_info_reply_between_busy_and_idle(parts: Parts) -> None:
    job = make_job("kernel_info_request")
    reply = await run(parts, job)
    assert reply["status"] == "ok"
    assert reply["implementation"] == "async_kernel"
    assert "kernel subshells" in reply["supported_features"]
    kinds = [(kind, t) for kind, t, _, _ in parts.outbox.sent]
    assert kinds == [("iopub", "status"), ("reply", "kernel_info_reply"), ("iopub", "status")]


async def test_a_rejected_job_gets_an_error_reply(parts: Parts) -> None:
    job = make_job("kernel_info_request")
    job.reject = error_content("ValueError", "no subshell with id 'x'")
    reply = await run(parts, job)
    assert reply["status"] == "error"
    assert reply["evalue"] == "no subshell with id 'x'"


async def test_a_failing_handler_still_replies(parts: Parts) -> None:
    job = make_job("history_request", {"hist_access_type": "sideways"})
    reply = await run(parts, job)
    assert reply["status"] == "error"
    assert reply["ename"] == "ValueError"
    assert "sideways" in reply["evalue"]


async def test_a_late_keyboard_interrupt_becomes_the_reply(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(job: Job) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(parts.handlers, "is_complete_request", interrupted)
    job = make_job("is_complete_request", {"code": "x"})
    reply = await run(parts, job)
    assert reply["status"] == "error"
    assert reply["ename"] == "KeyboardInterrupt"


async def test_execute_publishes_input_result_and_replies(parts: Parts) -> None:
    job = make_job("execute_request", {"code": "40 + 2"})
    reply = await run(parts, job)
    assert reply["status"] == "ok"
    count = reply["execution_count"]
    assert parts.outbox.of("execute_input") == [{"code": "40 + 2", "execution_count": count}]
    [result] = parts.outbox.of("execute_result")
    assert result["data"]["text/plain"] == "42"
    assert result["execution_count"] == count
    assert job.execute is not None
    assert job.execute.metadata["status"] == "ok"


async def test_an_error_aborts_what_was_queued_behind_it(parts: Parts) -> None:
    failing = make_job("execute_request", {"code": "1 / 0"})
    queued = make_job("execute_request", {"code": "print('must not run')"})
    parts.aborts.number(failing)
    parts.aborts.number(queued)
    await parts.runner.run(failing)
    await parts.runner.run(queued)
    reply = parts.outbox.reply_to(failing)
    assert (reply["status"], reply["ename"]) == ("error", "ZeroDivisionError")
    [error] = parts.outbox.of("error")
    assert error["ename"] == "ZeroDivisionError"
    assert error["traceback"]
    assert parts.outbox.reply_to(queued)["status"] == "aborted"
    assert parts.outbox.of("stream") == []


async def test_suppress_error_replies_ok_with_a_notice(parts: Parts) -> None:
    job = make_job("execute_request", {"code": "raise KeyError('k')"}, tags=["suppress-error"])
    reply = await run(parts, job)
    assert reply["status"] == "ok"
    assert parts.outbox.of("error") == []
    assert parts.outbox.of("stream") == [{"name": "stderr", "text": "KeyError (suppressed)\n"}]


async def test_shutdown_replies_before_it_stops(parts: Parts) -> None:
    job = make_job("shutdown_request", {"restart": True}, channel=Channel.control)
    reply = await run(parts, job)
    assert reply == {"status": "ok", "restart": True}
    assert parts.stopped == [True]


async def test_subshells_are_created_listed_and_deleted(parts: Parts) -> None:
    created = await run(parts, make_job("create_subshell_request", channel=Channel.control))
    subshell_id = created["subshell_id"]
    listed = await run(parts, make_job("list_subshell_request", channel=Channel.control))
    assert listed["subshell_id"] == [subshell_id]
    delete = make_job(
        "delete_subshell_request", {"subshell_id": subshell_id}, channel=Channel.control
    )
    assert (await run(parts, delete))["status"] == "ok"
    again = await run(
        parts,
        make_job("delete_subshell_request", {"subshell_id": subshell_id}, channel=Channel.control),
    )
    assert again["status"] == "error"
    assert subshell_id in again["evalue"]
