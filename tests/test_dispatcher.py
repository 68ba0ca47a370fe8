"""Unit tests of the run-mode policy (the dispatcher) and of `RunMode` parsing."""

from __future__ import annotations

import itertools
from typing import Any

import aiologic
import anyio
import pytest

from async_kernel._enums import Channel, KernelConcurrencyMode, MsgType, RunMode
from async_kernel.callers._caller import Caller
from async_kernel.requests._dispatcher import (
    DEFAULT_RUN_MODES,
    Aborts,
    Callers,
    Dispatcher,
    all_concurrency_run_modes,
    execute_override,
    run_mode_for,
)
from async_kernel.requests._subshells import SubshellManager
from async_kernel.wire._job import Job
from async_kernel.wire._session import Message

SHELL, CONTROL = Channel.shell, Channel.control
B, Q, T, TH = RunMode.blocking, RunMode.queue, RunMode.task, RunMode.thread

# The default table of DESIGN.md, written out again by hand: (shell, control); None = refused.
DESIGN_TABLE: dict[str, tuple[RunMode | None, RunMode | None]] = {
    "execute_request": (Q, T),
    "complete_request": (TH, TH),
    "inspect_request": (TH, TH),
    "is_complete_request": (TH, TH),
    "history_request": (TH, TH),
    "comm_msg": (T, T),
    "kernel_info_request": (B, B),
    "comm_info_request": (B, B),
    # DESIGN.md says blocking; comm messages now go to their comm's owner in arrival order
    # (requests/_comms.py), so open and close need not hold the channel back any more.
    "comm_open": (T, T),
    "comm_close": (T, T),
    "interrupt_request": (T, T),
    "shutdown_request": (None, T),
    "debug_request": (None, T),
    # Not in DESIGN.md's table; DESIGN.md puts subshell management on the control thread.
    "create_subshell_request": (None, T),
    "delete_subshell_request": (None, T),
    "list_subshell_request": (None, T),
}

TABLE_ROWS = [
    pytest.param(msg_type, channel, modes[i], id=f"{channel}-{msg_type}")
    for msg_type, modes in DESIGN_TABLE.items()
    for i, channel in enumerate((SHELL, CONTROL))
]


def make_job(
    code: str | None = "1",
    *,
    msg_type: str = "execute_request",
    channel: Channel = SHELL,
    metadata: dict[str, Any] | None = None,
    header: dict[str, Any] | None = None,
) -> Job:
    content = {} if code is None else {"code": code}
    msg = Message(
        header={"msg_id": "m", "msg_type": msg_type, **(header or {})},
        parent_header={},
        metadata=metadata or {},
        content=content,
    )
    return Job(msg, channel)


def override(
    code: str | None = "1",
    *,
    tags: list[Any] | None = None,
    meta: Any = None,
    head: Any = None,
) -> RunMode | None:
    content = {} if code is None else {"code": code}
    metadata: dict[str, Any] = {}
    if tags is not None:
        metadata["tags"] = tags
    if meta is not None:
        metadata["run_mode"] = meta
    header: dict[str, Any] = {"msg_type": "execute_request"}
    if head is not None:
        header["run_mode"] = head
    return execute_override(Job(Message(header, {}, metadata, content), SHELL))


# --- the default table ------------------------------------------------------------------------


def test_default_table_is_the_documented_one() -> None:
    expected = {
        (channel, MsgType(msg_type)): mode
        for msg_type, modes in DESIGN_TABLE.items()
        for channel, mode in zip((SHELL, CONTROL), modes, strict=True)
        if mode is not None
    }
    assert expected == DEFAULT_RUN_MODES


@pytest.mark.parametrize(("msg_type", "channel", "mode"), TABLE_ROWS)
def test_run_mode_for_default(msg_type: str, channel: Channel, mode: RunMode | None) -> None:
    assert run_mode_for(msg_type, channel, KernelConcurrencyMode.default) is mode
    # With a job whose request asks for nothing, the default still holds.
    job = make_job("x = 1", msg_type=msg_type, channel=channel)
    assert run_mode_for(msg_type, channel, KernelConcurrencyMode.default, job) is mode


@pytest.mark.parametrize(("msg_type", "channel", "mode"), TABLE_ROWS)
def test_run_mode_for_blocking(msg_type: str, channel: Channel, mode: RunMode | None) -> None:
    """`KernelConcurrencyMode.blocking` makes every accepted request blocking, nothing more."""
    expected = None if mode is None else B
    assert run_mode_for(msg_type, channel, KernelConcurrencyMode.blocking) is expected


@pytest.mark.parametrize("cmode", list(KernelConcurrencyMode))
@pytest.mark.parametrize(
    ("msg_type", "channel"),
    [
        ("foo_request", SHELL),
        ("foo_request", CONTROL),
        ("", SHELL),
        ("input_reply", SHELL),  # a stdin message, not a request
        ("execute_reply", SHELL),
        ("execute_request", Channel.stdin),
        ("execute_request", Channel.iopub),
        ("kernel_info_request", Channel.heartbeat),
        ("Execute_Request", SHELL),
    ],
)
def test_requests_a_channel_does_not_take(
    msg_type: str, channel: Channel, cmode: KernelConcurrencyMode
) -> None:
    assert run_mode_for(msg_type, channel, cmode) is None
    assert run_mode_for(msg_type, channel, cmode, make_job("##thread", msg_type=msg_type)) is None


def test_all_concurrency_run_modes() -> None:
    rows = all_concurrency_run_modes()
    assert all(
        set(row) == {"concurrency_mode", "channel", "msg_type", "run_mode"}
        and all(type(v) is str for v in row.values())
        for row in rows
    )
    table = {(r["concurrency_mode"], r["channel"], r["msg_type"]): r["run_mode"] for r in rows}
    assert len(table) == len(rows)  # no duplicates
    expected = {}
    for cmode, (msg_type, modes) in itertools.product(KernelConcurrencyMode, DESIGN_TABLE.items()):
        for channel, mode in zip((SHELL, CONTROL), modes, strict=True):
            if mode is not None:
                run_mode = "blocking" if cmode is KernelConcurrencyMode.blocking else mode.value
                expected[cmode.value, channel.value, msg_type] = run_mode
    assert table == expected
    # The table agrees with `run_mode_for` row by row.
    for (cmode, channel, msg_type), run_mode in table.items():
        found = run_mode_for(msg_type, Channel(channel), KernelConcurrencyMode(cmode))
        assert found is RunMode(run_mode)


# --- overrides of one execute_request -----------------------------------------------------------


@pytest.mark.parametrize("mode", list(RunMode))
@pytest.mark.parametrize(
    "first_line",
    ["##{}", "RunMode.{}", "  ##{}  ", "##{}\r", "\n\n##{}", "\r\n##{}"],
)
def test_first_line_selects_the_mode(mode: RunMode, first_line: str) -> None:
    code = first_line.format(mode.value) + "\nprint('hi')"
    assert override(code) is mode
    job = make_job(code)
    assert run_mode_for("execute_request", SHELL, KernelConcurrencyMode.default, job) is mode


@pytest.mark.parametrize("mode", list(RunMode))
def test_first_line_alone_selects_the_mode(mode: RunMode) -> None:
    assert override(str(mode)) is mode


@pytest.mark.parametrize(
    "code",
    [
        "# threading demo\nimport threading",
        "##threads\n1",
        "##thread-pool\n1",
        "## thread\n1",
        "#thread\n1",
        "thread\n1",  # a variable, not a mode
        "task = 1",
        "RunMode.threads\n1",
        "RunMode\n1",
        "##\n1",
        "##THREAD\n1",
        "x = 1\n##thread",  # only the first line counts
        "print('##thread')",
        "",
        "   ",
    ],
)
def test_anything_else_is_an_ordinary_comment(code: str) -> None:
    assert override(code) is None
    job = make_job(code)
    assert run_mode_for("execute_request", SHELL, KernelConcurrencyMode.default, job) is Q
    assert run_mode_for("execute_request", CONTROL, KernelConcurrencyMode.default, job) is T


@pytest.mark.parametrize("mode", list(RunMode))
def test_cell_tag_selects_the_mode(mode: RunMode) -> None:
    assert override(tags=["other", mode.value]) is mode


@pytest.mark.parametrize(
    "tags",
    [
        ["threads"],
        ["##thread"],  # a tag names the mode plainly
        ["RunMode.thread"],
        ["Thread"],
        [" thread"],
        [3, None, {"thread": 1}],
        "thread",  # not a list
        [],
    ],
)
def test_tags_that_are_not_modes(tags: Any) -> None:
    assert override(tags=tags) is None


def test_first_matching_tag_wins() -> None:
    assert override(tags=["task", "thread"]) is T
    assert override(tags=["suppress-error", "blocking", "queue"]) is B


@pytest.mark.parametrize("mode", list(RunMode))
def test_metadata_and_header_select_the_mode(mode: RunMode) -> None:
    assert override(meta=mode.value) is mode
    assert override(head=mode.value) is mode
    assert override(meta=str(mode)) is mode


@pytest.mark.parametrize("bad", ["threads", "", 1, None, ["thread"], {"mode": "thread"}])
def test_bad_metadata_and_header_values_are_ignored(bad: Any) -> None:
    metadata = {"run_mode": bad}
    header = {"run_mode": bad}
    msg = Message({"msg_type": "execute_request", **header}, {}, metadata, {"code": "1"})
    assert execute_override(Job(msg, SHELL)) is None


def test_override_precedence() -> None:
    """The first line beats a tag, a tag beats metadata, metadata beats the header."""
    assert override("##thread\n1", tags=["task"], meta="blocking", head="queue") is TH
    assert override("1", tags=["task"], meta="blocking", head="queue") is T
    assert override("1", meta="blocking", head="queue") is B
    assert override("1", head="queue") is Q
    # A weaker source still counts when a stronger one says nothing valid.
    assert override("# threading demo\n1", tags=["threads"], meta="nope", head="task") is T
    assert override("##threads", tags=["blocking"], head="task") is B
    assert override(None, meta="thread") is TH


def test_overrides_apply_to_execute_requests_only() -> None:
    cmode = KernelConcurrencyMode.default
    for msg_type in ("complete_request", "inspect_request", "comm_msg", "kernel_info_request"):
        job = make_job("##task", msg_type=msg_type, metadata={"run_mode": "queue"})
        default = DEFAULT_RUN_MODES[SHELL, MsgType(msg_type)]
        assert run_mode_for(msg_type, SHELL, cmode, job) is default


def test_override_on_the_control_channel() -> None:
    job = make_job("##queue\n1", channel=CONTROL)
    assert run_mode_for("execute_request", CONTROL, KernelConcurrencyMode.default, job) is Q


@pytest.mark.parametrize("code", ["##thread\n1", "##task\n1", "##queue\n1"])
def test_blocking_concurrency_mode_beats_overrides(code: str) -> None:
    job = make_job(code, metadata={"tags": ["thread"], "run_mode": "task"})
    assert run_mode_for("execute_request", SHELL, KernelConcurrencyMode.blocking, job) is B


def test_execute_request_content_without_code() -> None:
    job = make_job(None, metadata={"run_mode": "task"})
    assert run_mode_for("execute_request", SHELL, KernelConcurrencyMode.default, job) is T
    assert execute_override(Job(Message({}, {}, {}, {"code": 5}), SHELL)) is None


# --- RunMode parsing -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(RunMode))
def test_run_mode_get(mode: RunMode) -> None:
    name = mode.value
    for text in (name, f"##{name}", f"RunMode.{name}", f"  {name}\n", f" ##{name} ", mode):
        assert RunMode.get(text) is mode
    assert str(mode) == f"##{name}"
    assert RunMode.get(str(mode)) is mode
    assert f"{mode}" == f"##{name}"


@pytest.mark.parametrize(
    "value",
    [
        None,
        1,
        b"thread",
        ["thread"],
        "",
        "##",
        "RunMode.",
        "threads",
        "##threads",
        "RunMode.threads",
        "THREAD",
        "Thread",
        "## thread",
        "####thread",
        "##RunMode.thread",
        "RunMode.##thread",
        "run_mode.thread",
        "# threading demo",
        "thread pool",
    ],
)
def test_run_mode_get_refuses(value: Any) -> None:
    assert RunMode.get(value) is None


def test_run_mode_members() -> None:
    assert [m.value for m in RunMode] == ["blocking", "queue", "task", "thread"]
    assert RunMode("thread") is TH
    with pytest.raises(ValueError, match="threads"):
        RunMode("threads")
    assert [m.value for m in KernelConcurrencyMode] == ["default", "blocking"]


def test_abort_covers_exactly_what_arrived_behind_the_error() -> None:
    aborts = Aborts()
    failing, queued_1, queued_2 = (make_job(msg_type="execute_request") for _ in range(3))
    other_subshell = make_job(msg_type="execute_request", header={"subshell_id": "s"})
    other_subshell.subshell_id = "s"
    for job in (failing, queued_1, queued_2, other_subshell):
        aborts.number(job)
    aborts.abort_queued(failing)
    later = make_job(msg_type="execute_request")
    aborts.number(later)
    assert not aborts.is_aborted(failing)
    assert aborts.is_aborted(queued_1)
    assert aborts.is_aborted(queued_2)
    assert not aborts.is_aborted(later)
    assert not aborts.is_aborted(other_subshell)
    aborts.forget("s")
    assert aborts.number(other_subshell) == 1


def test_abort_all_aborts_every_shell_execute_that_has_not_started() -> None:
    aborts = Aborts()
    queued = make_job(msg_type="execute_request")
    in_subshell = make_job(msg_type="execute_request", header={"subshell_id": "s"})
    in_subshell.subshell_id = "s"
    on_control = make_job(msg_type="execute_request", channel=CONTROL)
    for job in (queued, in_subshell, on_control):
        aborts.number(job)
    aborts.abort_all()
    later = make_job(msg_type="execute_request")
    aborts.number(later)
    assert aborts.is_aborted(queued)
    assert aborts.is_aborted(in_subshell)
    assert aborts.is_aborted(later)
    assert not aborts.is_aborted(on_control)


class GatedRunner:
    """A runner whose jobs end only once `gate` is set."""

    def __init__(self) -> None:
        self.gate = aiologic.Event()
        self.ran: list[Job] = []

    def is_sync(self, job: Job) -> bool:
        return False

    async def run(self, job: Job) -> None:
        await self.gate
        self.ran.append(job)


@pytest.mark.anyio
async def test_wait_all_finished_waits_for_running_and_queued_jobs(anyio_backend: str) -> None:
    caller = Caller.start_new(backend=anyio_backend)  # pyright: ignore[reportArgumentType]
    try:
        runner = GatedRunner()
        callers = Callers(caller, caller, caller, SubshellManager(caller.backend))
        dispatcher = Dispatcher(
            runner,  # pyright: ignore[reportArgumentType]
            callers,
            Aborts(),
            concurrency_mode=lambda: KernelConcurrencyMode.default,
            on_input_reply=lambda _: None,
        )
        with anyio.fail_after(10):
            await dispatcher.wait_all_finished()  # nothing submitted: returns at once
            for job in (make_job(), make_job()):  # the second waits in the queue
                dispatcher.receive(SHELL, job.msg)
            finished = anyio.Event()

            async def wait() -> None:
                await dispatcher.wait_all_finished()
                finished.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                assert not finished.is_set()
                runner.gate.set()
                await finished.wait()
            assert len(runner.ran) == 2
    finally:
        caller.stop(force=True)
        assert caller.thread is not None
        caller.thread.join(10)
