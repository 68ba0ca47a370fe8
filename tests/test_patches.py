"""Process-wide patches: installed in one place, undone at teardown, with `time.sleep` intact."""

from __future__ import annotations

import builtins
import getpass
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import comm
import pytest

from async_kernel._enums import Channel
from async_kernel._patches import ProcessPatches
from async_kernel.ipython._compat import NOTEBOOK_ENVIRON, SHELL_MODULE
from async_kernel.ipython._shell import AsyncInteractiveShell
from async_kernel.output._comm import KernelCommManager
from async_kernel.output._stdin import StdinBroker
from async_kernel.output._stdio import StdIO
from async_kernel.requests._interrupts import Interrupter, Running
from async_kernel.wire._job import Job
from async_kernel.wire._session import Message

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

TIMEOUT = 10.0


def wakeup_fd() -> int:
    """The signal wakeup fd (-1 for none), left as it was."""
    fd = signal.set_wakeup_fd(-1)
    if fd != -1:
        signal.set_wakeup_fd(fd)
    return fd


def snapshot() -> dict[str, Any]:
    """What the kernel may change in the interpreter, by identity."""
    return {
        "time.sleep": time.sleep,
        "input": builtins.input,
        "getpass": getpass.getpass,
        "stdout": sys.stdout,
        "stderr": sys.stderr,
        "displayhook": sys.displayhook,
        "excepthook": sys.excepthook,
        "Thread.start": threading.Thread.start,
        "switchinterval": sys.getswitchinterval(),
        "create_comm": comm.create_comm,
        "get_comm_manager": comm.get_comm_manager,
        "SIGINT": signal.getsignal(signal.SIGINT),
        "SIGTERM": signal.getsignal(signal.SIGTERM),
        "wakeup_fd": wakeup_fd(),
        "MPLBACKEND": os.environ.get("MPLBACKEND"),
        "environ": {k: os.environ.get(k) for k in NOTEBOOK_ENVIRON},
        SHELL_MODULE: sys.modules.get(SHELL_MODULE),
        "builtins": {k: builtins.__dict__.get(k) for k in ("exit", "quit", "get_ipython")},
    }


class NullOutbox:
    session_id = "null"

    def publish(self, *args: Any, **kwargs: Any) -> None:
        pass

    def stream(self, name: str, text: str, parent: Job | None) -> None:
        pass


def install() -> tuple[ProcessPatches, Interrupter, AsyncInteractiveShell]:
    """Install the kernel's patches with parts that send nothing."""
    outbox: Any = NullOutbox()
    shell = AsyncInteractiveShell(outbox=outbox)
    interrupter = Interrupter()
    patches = ProcessPatches()
    patches.install(
        interrupter=interrupter,
        stdin=StdinBroker(outbox, lambda: None),
        stdio=StdIO(outbox.stream, flush_interval=0.1, capture_fds=False, fd_parent=lambda: None),
        shell=shell,
        comms=KernelCommManager(),
        outbox=outbox,
        switch_interval=0.001,
        on_terminate=lambda: None,
    )
    return patches, interrupter, shell


@pytest.fixture
def patches() -> Iterator[tuple[ProcessPatches, Interrupter]]:
    patches, interrupter, shell = install()
    try:
        yield patches, interrupter
    finally:
        patches.restore()
        shell.history_manager.end_session()  # pyright: ignore[reportOptionalMemberAccess]


def test_restore_puts_everything_back() -> None:
    before = snapshot()
    patches, _, shell = install()
    try:
        during = snapshot()
    finally:
        patches.restore()
        shell.history_manager.end_session()  # pyright: ignore[reportOptionalMemberAccess]
    assert not patches.installed
    assert snapshot() == before
    unchanged = {k for k in before if before[k] == during[k]}
    # Everything is changed while installed (MPLBACKEND only where it was not set, the shell
    # module only where ipykernel's own was not loaded, the wakeup fd only in a running asyncio
    # loop).
    assert unchanged <= {"MPLBACKEND", SHELL_MODULE, "wakeup_fd"}
    assert during["environ"] == NOTEBOOK_ENVIRON
    if before[SHELL_MODULE] is None:
        assert during[SHELL_MODULE].ZMQInteractiveShell.__name__ == "ZMQInteractiveShell"


def signal_once_the_loop_sleeps() -> None:
    """Send SIGINT to this thread once the main thread waits in its loop's selector."""
    main = threading.main_thread().ident
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(main or 0)  # pyright: ignore[reportPrivateUsage]
        if frame is not None and frame.f_code.co_name in {"select", "get_events"}:
            break
        time.sleep(0.001)  # polling a condition with a deadline
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio sets up a wakeup fd itself
async def test_a_signal_that_another_thread_receives_wakes_the_main_loop() -> None:
    """The main thread's loop sleeps; SIGINT lands in another thread; the handler runs at once.

    (The protocol test in `test_compat_interrupts.py` checks the same for both kernels.)
    """
    before = snapshot()
    patches, _, shell = install()
    caught: list[int] = []
    sender = threading.Thread(target=signal_once_the_loop_sleeps)
    start = time.monotonic()
    try:
        with anyio.CancelScope() as scope:

            def handler(signum: int, frame: object) -> None:
                caught.append(signum)
                scope.cancel()

            signal.signal(signal.SIGINT, handler)  # `restore` puts the original back
            sender.start()
            await anyio.sleep(TIMEOUT)
        sender.join(TIMEOUT)
    finally:
        patches.restore()
        shell.history_manager.end_session()  # pyright: ignore[reportOptionalMemberAccess]
    assert caught == [signal.SIGINT]
    assert time.monotonic() - start < TIMEOUT / 2, "the loop slept on after the signal"
    assert snapshot() == before


def in_thread(fn: Callable[[], object]) -> BaseException | None:
    """Run `fn` in a new thread; return what it raised."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as e:
            raised.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    return raised[0] if raised else None


@pytest.mark.usefixtures("patches")
def test_sleep_keeps_its_semantics_in_every_thread() -> None:
    time.sleep(0)
    time.sleep(0.001)
    with pytest.raises(ValueError, match="negative"):
        time.sleep(-1)
    assert in_thread(lambda: time.sleep(0)) is None
    assert isinstance(in_thread(lambda: time.sleep(-1)), ValueError)


def test_sleep_in_a_cell_thread_keeps_its_semantics(
    patches: tuple[ProcessPatches, Interrupter],
) -> None:
    _, interrupter = patches
    job = Job(Message({"msg_type": "execute_request"}, {}, {}, {}), Channel.shell)

    def cell() -> None:
        # No loop here: the caller and the cancel scope are never used by `sleep`.
        running = Running(job, threading.get_ident(), None, None, threading.Event())  # pyright: ignore[reportArgumentType]
        interrupter.add(running)
        try:
            time.sleep(0)
            time.sleep(0.001)
            time.sleep(-1)
        finally:
            interrupter.remove(job)

    assert isinstance(in_thread(cell), ValueError)


def test_an_in_process_kernel_leaves_the_interpreter_as_it_found_it(tmp_path: Path) -> None:
    """A kernel run in this process, driven to shutdown, undoes every patch when `run` returns."""
    script = textwrap.dedent(
        f"""
        import json, sys, threading
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_patches import snapshot
        from jupyter_client import BlockingKernelClient
        from jupyter_client.connect import write_connection_file

        before = {{k: repr(v) for k, v in snapshot().items()}}
        fname, _ = write_connection_file({str(tmp_path / "k.json")!r}, ip="127.0.0.1", key=b"k")
        from async_kernel import Kernel

        kernel = Kernel(connection_file=fname, capture_fd_output=False)
        done = []

        def client():
            kc = BlockingKernelClient(connection_file=fname)
            kc.load_connection_file()
            kc.start_channels()
            kc.wait_for_ready(timeout=30)
            # No output hook: printing here would go through the kernel's own sys.stdout.
            reply = kc.execute_interactive("x = 1", timeout=30, output_hook=lambda msg: None)
            done.append(reply["content"]["status"])
            kc.shutdown()

        threading.Thread(target=client, daemon=True).start()
        code = kernel.run()
        after = {{k: repr(v) for k, v in snapshot().items()}}
        diff = {{k: (before[k], after[k]) for k in before if before[k] != after[k]}}
        print(json.dumps({{"code": code, "ran": done, "diff": diff}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "ran": ["ok"], "diff": {}}, out.stderr
