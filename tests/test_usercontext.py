"""Context variables carried from cell to cell, per (sub)shell, for main-line cells only."""

from __future__ import annotations

import contextvars
from typing import Any

import pytest

from async_kernel._enums import Channel, RunMode
from async_kernel.requests._usercontext import UserContexts
from async_kernel.wire._job import Job, current_job
from async_kernel.wire._session import Message

__all__ = ()

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def job(
    *,
    subshell_id: str | None = None,
    mode: RunMode = RunMode.queue,
    channel: Channel = Channel.shell,
) -> Job:
    header = {"msg_type": "execute_request", "msg_id": "m"}
    msg = Message(header=header, parent_header={}, metadata={}, content={"code": "x"})
    return Job(msg, channel, subshell_id=subshell_id, run_mode=mode)


def run_cell(contexts: UserContexts, cell: Job, body: Any) -> Any:
    """Run `body` as a cell's code: in a fresh context, between `enter` and `leave`."""

    def cell_code() -> Any:
        current_job.set(cell)
        before = contexts.enter(cell)
        try:
            return body()
        finally:
            contexts.leave(cell, before)

    return contextvars.Context().run(cell_code)


def test_a_main_line_cell_passes_its_values_on() -> None:
    contexts = UserContexts()
    run_cell(contexts, job(), lambda: var.set("one"))
    assert run_cell(contexts, job(), var.get) == "one"
    assert var.get() == "unset"  # nothing leaks into the caller's context


@pytest.mark.parametrize("mode", [RunMode.task, RunMode.thread])
def test_concurrent_cells_read_but_do_not_write(mode: RunMode) -> None:
    contexts = UserContexts()
    run_cell(contexts, job(), lambda: var.set("main"))
    assert run_cell(contexts, job(mode=mode), lambda: (var.get(), var.set("theirs"))[0]) == "main"
    assert run_cell(contexts, job(), var.get) == "main"


def test_each_subshell_has_its_own_values() -> None:
    contexts = UserContexts()
    run_cell(contexts, job(subshell_id="a"), lambda: var.set("in a"))
    assert run_cell(contexts, job(subshell_id="a"), var.get) == "in a"
    assert run_cell(contexts, job(subshell_id="b"), var.get) == "unset"
    assert run_cell(contexts, job(), var.get) == "unset"
    contexts.forget("a")
    assert run_cell(contexts, job(subshell_id="a"), var.get) == "unset"


def test_control_executes_keep_nothing() -> None:
    contexts = UserContexts()
    run_cell(contexts, job(channel=Channel.control, mode=RunMode.task), lambda: var.set("c"))
    assert run_cell(contexts, job(), var.get) == "unset"


def test_the_kernels_request_variable_is_never_carried() -> None:
    contexts = UserContexts()
    other = job()
    run_cell(contexts, job(), lambda: current_job.set(other))
    later = job()
    assert run_cell(contexts, later, current_job.get) is later


def test_unchanged_values_are_not_rewritten() -> None:
    contexts = UserContexts()
    run_cell(contexts, job(), lambda: var.set("one"))
    run_cell(contexts, job(), lambda: None)
    assert run_cell(contexts, job(), var.get) == "one"
