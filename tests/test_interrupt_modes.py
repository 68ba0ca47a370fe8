"""`interrupt_mode: "message"`: interrupts without signals, also in a launcher's process group.

jupyter_client's `KernelManager.interrupt_kernel` sends an `interrupt_request` on control for a
kernelspec in message mode; the kernel must interrupt exactly what a SIGINT would, the cell's
child processes included. A kernel that does not lead its process group (a launcher's group,
as behind gateways and in containers) signals its own descendants, never the launcher.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.connect import write_connection_file
from jupyter_client.manager import KernelManager
from kernel_driver import TIMEOUT, Driver
from kernel_process import SIGINT_CHILD, gone, wait_gone

from async_kernel import kernelspec
from async_kernel.requests._children import group_descendants

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.name != "posix", reason="process groups and signals are POSIX"),
]

MARKER = "cell is running"


def _cell(child: Path, done: Path) -> str:
    return (
        "import subprocess, sys\n"
        f"ir_child = subprocess.Popen([sys.executable, {str(child)!r}, {str(done)!r}],"
        " stdout=subprocess.PIPE, text=True)\n"
        "assert ir_child.stdout.readline() == 'child ready\\n'\n"
        f'print("{MARKER}", flush=True)\n'
        "ir_child.wait()"
    )


@pytest.fixture(scope="module")
def message_spec() -> str:
    """A kernelspec `async-message` with `interrupt_mode: "message"`, next to the tests' specs."""
    prefix = Path(os.environ["JUPYTER_PATH"].split(os.pathsep)[0]).parent.parent
    kernelspec.install("async-message", prefix=prefix, interrupt_mode="message")
    return "async-message"


def test_kernel_manager_interrupts_with_a_message(message_spec: str, tmp_path: Path) -> None:
    km = KernelManager(kernel_name=message_spec)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    signals: list[Any] = []
    try:
        kc.wait_for_ready(timeout=TIMEOUT)
        assert km.kernel_spec is not None
        assert km.kernel_spec.interrupt_mode == "message"
        assert km.provisioner is not None
        real_send_signal = km.provisioner.send_signal

        async def record(signum: int) -> None:
            signals.append(signum)
            await real_send_signal(signum)

        km.provisioner.send_signal = record  # type: ignore[method-assign]
        d = Driver(kc)
        for where in ("", "##thread\n"):
            msg_id = d.execute(f"{where}import time\nprint('{MARKER}', flush=True)\ntime.sleep(60)")
            d.wait_stdout(msg_id, MARKER)
            km.interrupt_kernel()
            reply = d.reply(msg_id)["content"]
            assert reply["status"] == "error"
            assert reply["ename"] == "KeyboardInterrupt"
        child, done = tmp_path / "child.py", tmp_path / "done"
        child.write_text(SIGINT_CHILD)
        msg_id = d.execute(_cell(child, done))
        d.wait_stdout(msg_id, MARKER)
        km.interrupt_kernel()
        assert d.reply(msg_id)["content"]["ename"] == "KeyboardInterrupt"
        assert done.read_text() == "SIGINT"
        assert d.run("print('still here')") == "still here\n"
        assert signals == []  # no signal was sent: the interrupt went as a message
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


# --- a kernel inside its launcher's process group ---------------------------------------------

LAUNCHER = """
import subprocess, sys
kernel = subprocess.Popen([sys.executable, "-m", "async_kernel", "start", "-f", sys.argv[1]])
print(kernel.pid, flush=True)
sys.exit(kernel.wait())
"""


def _wait_connected(d: Driver) -> None:
    """Wait until a kernel_info request is answered with its iopub status (iopub subscribed)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        msg_id = d.send("kernel_info_request", {})
        try:
            d.reply(msg_id, timeout=1)
        except AssertionError:  # no reply yet, or its idle went out before we subscribed
            assert time.monotonic() < deadline, "the kernel never answered with iopub"
        else:
            return


@pytest.fixture
def grouped_kernel(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Driver]]:
    """A kernel started by a launcher that leads the process group (the kernel does not)."""
    connection_file = tmp_path / "kernel.json"
    write_connection_file(str(connection_file), ip="127.0.0.1", key=b"grouped-kernel-key")
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(connection_file)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert launcher.stdout is not None
    kernel_pid = int(launcher.stdout.readline())
    kc = BlockingKernelClient(connection_file=str(connection_file))
    kc.load_connection_file()
    kc.start_channels()
    try:
        d = Driver(kc)
        _wait_connected(d)
        assert os.getpgid(kernel_pid) == launcher.pid != kernel_pid
        yield launcher, kernel_pid, d
    finally:
        kc.stop_channels()
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait(TIMEOUT)
        launcher.stdout.close()
        if not gone(kernel_pid):
            os.kill(kernel_pid, signal.SIGKILL)


def test_an_interrupt_reaches_the_cells_children_but_not_the_launcher(
    grouped_kernel: tuple[subprocess.Popen[str], int, Driver], tmp_path: Path
) -> None:
    launcher, kernel_pid, d = grouped_kernel
    child, done = tmp_path / "child.py", tmp_path / "done"
    child.write_text(SIGINT_CHILD)
    msg_id = d.execute(_cell(child, done))
    d.wait_stdout(msg_id, MARKER)
    reply = d.reply(d.send("interrupt_request", {}, channel="control"))
    assert reply["content"]["status"] == "ok"
    content = d.reply(msg_id)["content"]
    assert content["status"] == "error"
    assert content["ename"] == "KeyboardInterrupt"
    assert done.read_text() == "SIGINT"  # the cell's child was interrupted too
    assert launcher.poll() is None  # and the launcher, in the same group, was not
    assert d.run("print('still here')") == "still here\n"
    d.send("shutdown_request", {"restart": False}, channel="control")
    assert wait_gone(kernel_pid, TIMEOUT)
    assert launcher.wait(TIMEOUT) == 0


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_group_descendants_leave_out_new_sessions_and_ancestors() -> None:
    """Children in our group and theirs are found; a child with a session of its own is not."""
    sleeper = "import time; time.sleep(60)"
    spawner = (
        f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {sleeper!r}]).wait()"
    )
    same = subprocess.Popen([sys.executable, "-c", spawner])
    own = subprocess.Popen([sys.executable, "-c", sleeper], start_new_session=True)
    grandchildren: list[int] = []
    try:
        deadline = time.monotonic() + TIMEOUT
        while not grandchildren:
            found = group_descendants()
            grandchildren = [
                pid for pid in found if pid != same.pid and _parent_of(pid) == same.pid
            ]
            assert time.monotonic() < deadline, f"no grandchild among {found}"
            time.sleep(0.05)  # polling for the grandchild's start, with a deadline
        assert same.pid in found
        assert own.pid not in found
        assert os.getpid() not in found
        assert os.getppid() not in found
    finally:
        for pid in grandchildren:
            os.kill(pid, signal.SIGKILL)
        for process in (same, own):
            process.kill()
            process.wait(TIMEOUT)
