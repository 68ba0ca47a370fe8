"""Run modes over a real kernel (asyncio and trio): overrides, concurrency, introspection.

Each test talks to a kernel process through `kernel_driver.Driver`. Nothing is ordered with
sleeps: a test waits for the protocol's own events (`execute_input`, stream output, replies,
`status`) and releases cells through events inside the kernel (an `anyio.Event`, a
`threading.Event`, a socket the test connects to). Every wait has a timeout, and every wait
inside the kernel has a longer one, so a broken kernel fails the test instead of hanging it.
"""

from __future__ import annotations

import itertools
import json
import socket
from typing import TYPE_CHECKING, Any

import pytest
from kernel_driver import Driver

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager

PROBE = (
    "from async_kernel import get_job\n"
    "import threading\n"
    "print(get_job().run_mode.value, threading.current_thread().name == 'MainThread')"
)
"""Prints the run mode the cell got, and whether it runs on the main thread."""

KERNEL_WAIT = 30
"""Seconds a cell waits inside the kernel at most (longer than any wait of the test)."""


@pytest.fixture
def driver(kernel: tuple[KernelManager, BlockingKernelClient]) -> Driver:
    """A driver for the module's kernel, with the imports the cells below use."""
    d = Driver(kernel[1])
    d.run(
        "import anyio, threading\n"
        "from async_kernel import Channel, RunMode\n"
        "from async_kernel import get_job, get_kernel"
    )
    return d


def expected_output(mode: str) -> str:
    """What `PROBE` prints for a cell that runs in `mode`."""
    return f"{mode} {mode != 'thread'}\n"


# --- overrides and their precedence --------------------------------------------------------

OVERRIDES = [
    # first line, tags, metadata run_mode, header run_mode, expected mode
    pytest.param("", [], None, None, "queue", id="default"),
    pytest.param("##thread", ["task"], "queue", "blocking", "thread", id="line-beats-all"),
    pytest.param("##queue", ["thread"], "thread", "thread", "queue", id="line-queue-beats-all"),
    pytest.param("##task", [], None, "thread", "task", id="line-task"),
    pytest.param("##blocking", [], "thread", None, "blocking", id="line-blocking"),
    pytest.param("RunMode.thread", ["task"], "task", "task", "thread", id="line-enum"),
    pytest.param("", ["blocking"], "thread", "task", "blocking", id="tag-beats-metadata"),
    pytest.param("", ["other", "thread"], "queue", "queue", "thread", id="tag-among-others"),
    pytest.param("", ["threads", "Thread", "##thread"], "task", None, "task", id="not-a-tag"),
    pytest.param("", [], "thread", "task", "thread", id="metadata-beats-header"),
    pytest.param("", [], "task", None, "task", id="metadata"),
    pytest.param("", [], "threads", "task", "task", id="metadata-not-a-mode"),
    pytest.param("", [], None, "thread", "thread", id="header"),
    pytest.param("", [], None, "threads", "queue", id="header-not-a-mode"),
    pytest.param("# threading demo", [], None, "task", "task", id="comment-threading-demo"),
    pytest.param("##threads", [], None, None, "queue", id="comment-threads"),
    pytest.param("## thread", [], None, None, "queue", id="comment-spaced"),
    pytest.param("#thread", [], "task", None, "task", id="comment-single-hash"),
]


@pytest.mark.parametrize(("line", "tags", "meta_mode", "header_mode", "expected"), OVERRIDES)
def test_override_precedence(
    driver: Driver,
    line: str,
    tags: list[str],
    meta_mode: str | None,
    header_mode: str | None,
    expected: str,
) -> None:
    """First line > tag > metadata `run_mode` > header `run_mode` > default; comments are code."""
    metadata: dict[str, Any] = {"tags": tags}
    if meta_mode is not None:
        metadata["run_mode"] = meta_mode
    header = {"run_mode": header_mode} if header_mode is not None else {}
    out = driver.run(f"{line}\n{PROBE}", metadata=metadata, header=header)
    assert out == expected_output(expected)


def test_thread_cell_output_lands_in_its_cell(driver: Driver) -> None:
    """A `##thread` cell runs on a worker thread; its output, also after awaits, is its own."""
    code = (
        "##thread\n"
        "print('before', threading.current_thread().name)\n"
        "await anyio.sleep(0)\n"
        "from async_kernel import Caller\n"
        "await Caller().call_soon(print, 'from a task')\n"
        "print('after')"
    )
    msg_id = driver.execute(code)
    assert driver.reply(msg_id)["content"]["status"] == "ok", driver.errors(msg_id)
    lines = driver.stdout(msg_id).splitlines()
    assert lines[0].startswith("before ")
    assert lines[0] != "before MainThread"
    assert lines[1:] == ["from a task", "after"]
    streams = [m for _, m in driver.got(msg_id).iopub if m["msg_type"] == "stream"]
    assert all(m["parent_header"]["msg_id"] == msg_id for m in streams)


# --- concurrency between cells --------------------------------------------------------------


def test_task_cells_interleave(driver: Driver) -> None:
    """A `##task` cell waiting on an event is finished by a second `##task` cell setting it."""
    driver.run("ev_task = anyio.Event()")
    first = driver.execute(
        "##task\n"
        "print('one waits', flush=True)\n"
        f"with anyio.fail_after({KERNEL_WAIT}):\n"
        "    await ev_task.wait()\n"
        "print('one done')"
    )
    driver.wait_stdout(first, "one waits")
    second = driver.execute("##task\nev_task.set()\nprint('two done')")
    assert driver.reply(second)["content"]["status"] == "ok", driver.errors(second)
    assert driver.reply(first)["content"]["status"] == "ok", driver.errors(first)
    assert driver.stdout(first) == "one waits\none done\n"
    assert driver.stdout(second) == "two done\n"
    # Both on iopub, so their order is the kernel's: the first cell ended after the second began.
    started_second, _ = driver.wait_for(second, "execute_input")
    assert started_second < driver.idle_number(first), "the cells did not overlap"


def test_queue_cells_run_in_order(driver: Driver) -> None:
    """`##queue` cells run one at a time in arrival order, even when the first one waits."""
    driver.run("gate = anyio.Event()\norder = []")
    first = driver.execute(
        "##queue\n"
        "print('q1 waits', flush=True)\n"
        f"with anyio.fail_after({KERNEL_WAIT}):\n"
        "    await gate.wait()\n"
        "order.append(1)"
    )
    driver.wait_stdout(first, "q1 waits")
    rest = [driver.execute(f"##queue\norder.append({k})") for k in (2, 3, 4)]
    # A task cell runs at once: nothing queued behind the waiting cell may have run yet.
    assert driver.run("##task\nprint(order)\ngate.set()") == "[]\n"
    cells = [first, *rest]
    for msg_id in cells:
        assert driver.reply(msg_id)["content"]["status"] == "ok", driver.errors(msg_id)
    assert driver.run("print(order)") == "[1, 2, 3, 4]\n"
    for earlier, later in itertools.pairwise(cells):
        busy, _ = driver.wait_for(later, "status")
        assert driver.idle_number(earlier) < busy, "a queued cell overtook the one ahead of it"


def test_many_concurrent_thread_cells_all_succeed(driver: Driver) -> None:
    """IPython's per-cell builtins and displayhook traps are not thread-safe; ours are set once.

    With IPython's traps, two `##thread` cells entering and leaving at once could both delete
    `exit` from the builtins (`KeyError: 'exit'`), or one could remove `get_ipython` while the
    other still ran.
    """
    cells = [driver.execute("##thread\nget_ipython()\nexit") for _ in range(2000)]
    failed = [driver.errors(m) for m in cells if driver.reply(m)["content"]["status"] != "ok"]
    assert not failed


def test_blocked_queue_cell_does_not_block_thread_cell(driver: Driver) -> None:
    """A `##thread` cell runs and prints to its own cell while a queue cell blocks MainThread."""
    driver.run("release = threading.Event()")
    blocked = driver.execute(
        "print('A blocks', threading.current_thread().name, flush=True)\n"
        f"print('A released', release.wait({KERNEL_WAIT}))"
    )
    try:
        driver.wait_stdout(blocked, "A blocks")
        worker = driver.execute(
            "##thread\nprint('B on', threading.current_thread().name)\nrelease.set()"
        )
        assert driver.reply(worker)["content"]["status"] == "ok", driver.errors(worker)
    finally:
        driver.run("##thread\nrelease.set()")
    assert driver.reply(blocked)["content"]["status"] == "ok", driver.errors(blocked)
    assert driver.stdout(blocked) == "A blocks MainThread\nA released True\n"
    out = driver.stdout(worker)
    assert out.startswith("B on ")
    assert out != "B on MainThread\n"
    started_worker, _ = driver.wait_for(worker, "execute_input")
    assert started_worker < driver.idle_number(blocked)


def test_requests_answer_while_main_thread_blocked(driver: Driver) -> None:
    """Completion, inspection, is_complete and kernel_info reply while a cell blocks MainThread.

    The cell blocks in `socket.accept()` on the main thread until the test connects, so the
    replies can only come first if those requests do not need the main thread.
    """
    reply = driver.reply(
        driver.execute(
            "import socket\n"
            "blocker = socket.create_server(('127.0.0.1', 0))\n"
            f"blocker.settimeout({KERNEL_WAIT})",
            user_expressions={"port": "blocker.getsockname()[1]"},
        )
    )
    port = int(reply["content"]["user_expressions"]["port"]["data"]["text/plain"])
    blocked = driver.execute(
        "print('blocking on', threading.current_thread().name, flush=True)\n"
        "conn, _ = blocker.accept()\n"
        "conn.close()\n"
        "print('released')"
    )
    try:
        driver.wait_stdout(blocked, "blocking on MainThread")
        requests = {
            "complete": driver.send(
                "complete_request", {"code": "import os\nos.pa", "cursor_pos": 15}
            ),
            "inspect": driver.send(
                "inspect_request", {"code": "print", "cursor_pos": 5, "detail_level": 0}
            ),
            "is_complete": driver.send("is_complete_request", {"code": "for i in x:"}),
            "kernel_info": driver.send("kernel_info_request", {}),
        }
        replies = {name: driver.reply(msg_id) for name, msg_id in requests.items()}
        assert driver.got(blocked).reply is None, "the blocked cell replied before the others"
    finally:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    assert driver.reply(blocked)["content"]["status"] == "ok", driver.errors(blocked)
    assert driver.stdout(blocked).endswith("released\n")
    assert any("path" in m for m in replies["complete"]["content"]["matches"])
    assert replies["inspect"]["content"]["found"] is True
    assert replies["is_complete"]["content"]["status"] == "incomplete"
    assert replies["kernel_info"]["content"]["implementation"] == "async_kernel"
    driver.run("blocker.close()")


# --- the kernel-wide concurrency mode -------------------------------------------------------


@pytest.fixture
def blocking_mode(driver: Driver) -> Iterator[Driver]:
    """The kernel in `KernelConcurrencyMode.blocking`, set from a cell; set back afterwards."""
    driver.run("get_kernel().concurrency_mode = 'blocking'")
    try:
        yield driver
    finally:
        driver.run("get_kernel().concurrency_mode = 'default'")
    assert driver.run("##thread\n" + PROBE) == expected_output("thread")


def test_blocking_concurrency_mode(blocking_mode: Driver) -> None:
    """`KernelConcurrencyMode.blocking` set at run time runs even `##thread` cells on MainThread."""
    d = blocking_mode
    assert d.run("print(get_kernel().concurrency_mode.value)") == "blocking\n"
    assert d.run("##thread\n" + PROBE) == expected_output("blocking")
    assert d.run(PROBE, metadata={"tags": ["task"]}) == expected_output("blocking")
    out = d.run("print(get_kernel().get_run_mode('complete_request').value)")
    assert out == "blocking\n"


def test_get_job_describes_the_request(driver: Driver) -> None:
    """`get_job()` in a cell is the execute request: its message, mode, arrival and subshell."""
    code = (
        "import json, time\n"
        "job = get_job()\n"
        "print(json.dumps({'msg_id': job.msg.msg_id, 'msg_type': job.msg.msg_type,\n"
        "    'mode': job.run_mode.value, 'age': time.monotonic() - job.received,\n"
        "    'subshell_id': job.subshell_id}))"
    )
    msg_id = driver.execute(code, header={"run_mode": "task"})
    assert driver.reply(msg_id)["content"]["status"] == "ok", driver.errors(msg_id)
    job = json.loads(driver.stdout(msg_id))
    assert job["msg_id"] == msg_id
    assert job["msg_type"] == "execute_request"
    assert job["mode"] == "task"
    assert 0 <= job["age"] < 60
    assert job["subshell_id"] is None


# --- introspection ---------------------------------------------------------------------------

DEFAULT_TABLE = {
    # msg_type: (shell, control), from DESIGN.md
    "execute_request": ("queue", "task"),
    "complete_request": ("thread", "thread"),
    "inspect_request": ("thread", "thread"),
    "is_complete_request": ("thread", "thread"),
    "history_request": ("thread", "thread"),
    "comm_msg": ("task", "task"),
    "kernel_info_request": ("blocking", "blocking"),
    "comm_info_request": ("blocking", "blocking"),
    # Comm messages go to their comm's owner in arrival order: open and close no longer
    # hold the channel back (DESIGN.md still says blocking).
    "comm_open": ("task", "task"),
    "comm_close": ("task", "task"),
    "interrupt_request": ("task", "task"),
    "shutdown_request": (None, "task"),
    "debug_request": (None, "task"),
}


def test_get_run_mode_from_a_cell(driver: Driver) -> None:
    """`get_kernel().get_run_mode` answers the default table, and a job's own mode."""
    code = (
        "import json\n"
        "k = get_kernel()\n"
        "def mode(m):\n"
        "    return None if m is None else m.value\n"
        f"print(json.dumps({{t: [mode(k.get_run_mode(t)), "
        f"mode(k.get_run_mode(t, channel=Channel.control))] for t in {list(DEFAULT_TABLE)!r}}}))"
    )
    table = json.loads(driver.run(code))
    assert {t: tuple(modes) for t, modes in table.items()} == DEFAULT_TABLE
    own = "print(get_kernel().get_run_mode('execute_request', job=get_job()).value)"
    assert driver.run("##thread\n" + own) == "thread\n"
    assert driver.run(own, header={"run_mode": "task"}) == "task\n"
    assert driver.run(own) == "queue\n"


def test_all_concurrency_run_modes_from_a_cell(driver: Driver) -> None:
    """`all_concurrency_run_modes()` lists the default table, and all-blocking for `blocking`."""
    rows = json.loads(
        driver.run("import json\nprint(json.dumps(get_kernel().all_concurrency_run_modes()))")
    )
    got = {(r["concurrency_mode"], r["channel"], r["msg_type"]): r["run_mode"] for r in rows}
    assert len(got) == len(rows), "duplicate rows"
    want: dict[tuple[str, str, str], str] = {}
    for msg_type, modes in DEFAULT_TABLE.items():
        for channel, mode in zip(("shell", "control"), modes, strict=True):
            if mode is not None:
                want["default", channel, msg_type] = mode
                want["blocking", channel, msg_type] = "blocking"
    assert {key: got[key] for key in want} == want
    assert all(mode == "blocking" for (cmode, _, _), mode in got.items() if cmode == "blocking")
    assert ("default", "shell", "shutdown_request") not in got
