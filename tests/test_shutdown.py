"""Ending a kernel while code runs: `shutdown_request`, SIGTERM and the launcher's death.

Each test starts a kernel process of its own (asyncio and trio), runs a cell that prints
`started` and then blocks, waits for that output on iopub, ends the kernel, and then only
watches: the process must exit by itself, with code 0, within `EXIT_WITHIN` seconds (code
that ignores the interrupt: within the kernel's `shutdown_grace` and 2 s more), and output the
cell produced must have reached the client. `jupyter_client`'s own shutdown would kill a
kernel that hangs, so it is only used to clean up after a test that failed. When the launcher
dies, the kernel (not its child: only watched) must be gone within `EXIT_WITHIN` seconds
whatever its cells do, also when they ignore interrupts and `shutdown_grace` is long.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import start_new_kernel
from kernel_driver import Driver, code
from kernel_process import gone, group_members, launched_kernel, wait_gone

from async_kernel import kernelspec

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jupyter_client.manager import KernelManager

__all__ = ()

pytestmark = pytest.mark.timeout(60)

log = logging.getLogger(__name__)

KERNEL_NAMES = ("async", "async-trio")
"""The kernelspecs that `conftest.py` installs: asyncio and trio."""
EXIT_WITHIN = 5.0
"""Seconds from the shutdown (request, signal, launcher's death) to the end of the process."""
GRACE = 3.0
"""The kernel's default `shutdown_grace`: how long it waits for code that ignores interrupts."""

STARTED = 'print("started", flush=True)\n'

PLACES = {
    "time.sleep": STARTED + "time.sleep(30)",
    "busy loop": STARTED + "while True:\n    pass",
    "anyio.sleep": STARTED + "await anyio.sleep(30)",
    "asyncio.sleep": STARTED + "await asyncio.sleep(30)",
    "##thread": "##thread\n" + STARTED + "time.sleep(30)",
    "subshell": STARTED + "time.sleep(30)",
}
"""Where the running cell is when the shutdown comes, and its code."""

# Everything but the handler runs inside the `try`, the end of the first `print` and the jumps
# of the inner loop included, so wherever the interrupt lands, it is caught.
IGNORES_INTERRUPTS = code(
    """
    ignored = 0
    while True:
        try:
            if not ignored:
                print("before", flush=True)
            while True:
                time.sleep(0.05)
        except KeyboardInterrupt:
            ignored += 1
            print(f"ignored interrupt {ignored}", flush=True)
    """
)


@contextlib.contextmanager
def own_kernel(kernel_name: str) -> Iterator[tuple[KernelManager, Driver]]:
    """A kernel process for one test, with `time`, `anyio` and `asyncio` imported."""
    km, kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=60)
    try:
        d = Driver(kc)
        d.run("import time, anyio, asyncio")
        yield km, d
    finally:
        kc.stop_channels()
        if km.has_kernel:  # kills only a kernel that outlived its test
            km.shutdown_kernel(now=True)


def popen(km: KernelManager) -> subprocess.Popen[bytes]:
    """The kernel's process (jupyter_client's `LocalProvisioner` keeps its `Popen`)."""
    process = getattr(km.provisioner, "process", None)
    assert isinstance(process, subprocess.Popen), km.provisioner
    return process


def exit_code(process: subprocess.Popen[bytes], start: float, within: float) -> int:
    """Wait until `process` exits, at most `within` seconds after `start`; return its code."""
    try:
        returncode = process.wait(timeout=max(0.0, start + within - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the kernel still runs {within} s after it was told to stop")
    log.info("the kernel exited %.2f s after it was told to stop", time.monotonic() - start)
    return returncode


def assert_no_process_left(pid: int) -> None:
    """Neither the kernel nor anything it started (its process group) still runs."""
    assert gone(pid)
    assert group_members(pid) == [], "processes of the kernel's group outlived it"


def shutdown(d: Driver) -> str:
    """Send a `shutdown_request` on control; return its msg_id."""
    return d.send("shutdown_request", {"restart": False}, channel="control")


def assert_shut_down(d: Driver, msg_id: str, timeout: float) -> None:
    """The shutdown request got its `ok` reply (and `idle`)."""
    reply = d.reply(msg_id, timeout=timeout)
    assert reply["content"] == {"status": "ok", "restart": False}


def assert_interrupted(d: Driver, cell: str) -> None:
    """The cell was answered `KeyboardInterrupt` before the kernel ended, its output delivered."""
    reply = d.wait_until(lambda: d.got(cell).reply, "the interrupted cell's reply", 1)
    assert reply[1]["content"]["status"] == "error"
    assert reply[1]["content"]["ename"] == "KeyboardInterrupt"
    assert d.stdout(cell) == "started\n"


CASES = [
    pytest.param(name, place, id=f"{name}-{place}")
    for name in KERNEL_NAMES
    for place in PLACES
    if not (place == "asyncio.sleep" and name == "async-trio")
]


@pytest.mark.parametrize(("kernel_name", "place"), CASES)
def test_shutdown_request_while_a_cell_runs(kernel_name: str, place: str) -> None:
    with own_kernel(kernel_name) as (km, d):
        header = None
        if place == "subshell":
            header = {"subshell_id": d.create_subshell()}
        process = popen(km)
        cell = d.execute(PLACES[place], header=header)
        d.wait_stdout(cell, "started")
        start = time.monotonic()
        msg_id = shutdown(d)
        assert_shut_down(d, msg_id, EXIT_WITHIN)
        assert exit_code(process, start, EXIT_WITHIN) == 0
        assert_interrupted(d, cell)
        assert_no_process_left(process.pid)


@pytest.mark.parametrize("kernel_name", KERNEL_NAMES)
@pytest.mark.parametrize("where", ["main shell", "subshell"])
def test_queued_cells_are_aborted_not_run(kernel_name: str, where: str) -> None:
    with own_kernel(kernel_name) as (km, d):
        header = None
        if where == "subshell":
            header = {"subshell_id": d.create_subshell()}
        process = popen(km)
        cell = d.execute(PLACES["time.sleep"], header=header)
        queued = d.execute('print("queued cell ran", flush=True)', header=header)
        d.wait_stdout(cell, "started")
        start = time.monotonic()
        assert_shut_down(d, shutdown(d), EXIT_WITHIN)
        assert exit_code(process, start, EXIT_WITHIN) == 0
        assert_interrupted(d, cell)
        reply = d.wait_until(lambda: d.got(queued).reply, "the queued cell's reply", 1)
        assert reply[1]["content"]["status"] == "aborted"
        assert d.stdout(queued) == ""
        assert_no_process_left(process.pid)


@pytest.mark.parametrize("kernel_name", KERNEL_NAMES)
@pytest.mark.parametrize("where", ["main shell", "##thread"])
def test_code_that_ignores_interrupts_is_ended_after_the_grace(
    kernel_name: str, where: str
) -> None:
    with own_kernel(kernel_name) as (km, d):
        process = popen(km)
        cell = d.execute(("##thread\n" if where == "##thread" else "") + IGNORES_INTERRUPTS)
        d.wait_stdout(cell, "before")
        start = time.monotonic()
        msg_id = shutdown(d)
        assert_shut_down(d, msg_id, EXIT_WITHIN)
        # Output of the code that goes on running still arrives.
        d.wait_stdout(cell, "ignored interrupt 1", timeout=GRACE)
        assert exit_code(process, start, GRACE + 2) == 0
        d.drain()
        assert d.stdout(cell) == "before\nignored interrupt 1\n"
        assert_no_process_left(process.pid)


@pytest.mark.parametrize("kernel_name", KERNEL_NAMES)
def test_sigterm_while_a_cell_sleeps(kernel_name: str) -> None:
    with own_kernel(kernel_name) as (km, d):
        process = popen(km)
        cell = d.execute(PLACES["time.sleep"])
        d.wait_stdout(cell, "started")
        start = time.monotonic()
        km.signal_kernel(signal.SIGTERM)
        assert exit_code(process, start, EXIT_WITHIN) == 0
        assert_interrupted(d, cell)
        assert_no_process_left(process.pid)


def wait_ready(d: Driver, timeout: float = 60) -> Driver:
    """Wait until the kernel answers on shell and iopub (`wait_for_ready` without heartbeats).

    `wait_for_ready` gives up when the heartbeat misses a beat, which a loaded machine makes
    it do while the kernel starts.
    """
    deadline = time.monotonic() + timeout
    while True:
        msg_id = d.send("kernel_info_request", {})
        try:
            d.reply(msg_id, timeout=min(2.0, max(0.1, deadline - time.monotonic())))
        except AssertionError:  # no reply yet, or its idle was sent before we subscribed
            if time.monotonic() > deadline:
                raise
            continue
        return d


ORPHAN_CELLS = {
    "busy loop": STARTED + "while True:\n    pass",
    "##thread busy loop": "##thread\n" + STARTED + "while True:\n    pass",
    "subshell busy loop": STARTED + "while True:\n    pass",
    "time.sleep": STARTED + "time.sleep(1000)",
    "ignores interrupts": IGNORES_INTERRUPTS.replace('print("before"', 'print("started"'),
    "##thread ignores interrupts": "##thread\n"
    + IGNORES_INTERRUPTS.replace('print("before"', 'print("started"'),
}
"""What runs when the launcher dies: each prints `started` first."""


@pytest.fixture(scope="module")
def long_grace() -> str:
    """A kernelspec whose `shutdown_grace` (30 s) is longer than an orphan may live."""
    prefix = Path(os.environ["JUPYTER_PATH"]).parent.parent  # conftest's spec prefix
    kernelspec.install(
        "async-long-grace",
        prefix=prefix,
        display_name="async-kernel (tests, long grace)",
        settings={"Kernel.shutdown_grace": 30},
    )
    return "async-long-grace"


@pytest.mark.parametrize("kernel_name", KERNEL_NAMES)
@pytest.mark.parametrize("cell", list(ORPHAN_CELLS))
def test_kernel_exits_when_its_launcher_dies_whatever_runs(kernel_name: str, cell: str) -> None:
    """Within `EXIT_WITHIN` seconds of the launcher's death, the kernel and its group are gone."""
    orphan_exits_in_time(kernel_name, cell)


@pytest.mark.parametrize("cell", ["ignores interrupts", "##thread ignores interrupts"])
def test_an_orphan_does_not_wait_for_a_long_shutdown_grace(long_grace: str, cell: str) -> None:
    """The shutdown grace is for clients that wait; an orphan has none: it ends in time."""
    orphan_exits_in_time(long_grace, cell)


def orphan_exits_in_time(kernel_name: str, cell: str) -> None:
    """Run `cell`, kill the launcher, and watch the kernel end within `EXIT_WITHIN` seconds."""
    with launched_kernel(kernel_name, ready=False) as launched:
        kc = BlockingKernelClient(connection_file=launched.connection_file)
        kc.load_connection_file()
        kc.start_channels()
        try:
            d = wait_ready(Driver(kc))
            d.run("import time")
            header = None
            if cell.startswith("subshell"):
                header = {"subshell_id": d.create_subshell()}
            msg_id = d.execute(ORPHAN_CELLS[cell], header=header)
            d.wait_stdout(msg_id, "started")
            start = time.monotonic()
            launched.launcher.kill()
            launched.launcher.wait(EXIT_WITHIN)
            assert wait_gone(launched.kernel_pid, EXIT_WITHIN - (time.monotonic() - start)), (
                f"the kernel outlived its launcher by {EXIT_WITHIN} s"
            )
            log.info("the kernel exited %.2f s after its launcher", time.monotonic() - start)
        finally:
            kc.stop_channels()
        assert group_members(launched.kernel_pid) == []
