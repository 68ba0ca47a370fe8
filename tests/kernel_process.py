"""Kernel processes seen from outside: whether one is gone, and kernels whose launcher can die.

`launched_kernel` starts a kernel from a launcher process of its own (a `KernelManager` in a
small Python process, so the kernel's `JPY_PARENT_PID` names the launcher, as in a real
frontend); a test kills the launcher and watches the kernel with `wait_gone`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import TYPE_CHECKING, Any

import zmq

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = (
    "SIGINT_CHILD",
    "Launched",
    "check_session",
    "gone",
    "group_members",
    "launched_kernel",
    "wait_gone",
)

_LAUNCHER = """
import sys
from jupyter_client.manager import KernelManager

km = KernelManager(kernel_name=sys.argv[1])
km.start_kernel()
if sys.argv[2] == "ready":
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
print(km.provisioner.process.pid, km.connection_file, flush=True)
sys.stdin.read()  # until killed
"""


def gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie that nobody reaped yet counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return any(line.startswith("State:") and "Z" in line.split()[1] for line in status.splitlines())


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until `pid` has exited; False if it still runs after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # polling a condition with a deadline, not ordering events
    return True


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`, from `/proc` (Linux)."""
    members: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # it ended while we looked
            continue
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


@dataclass
class Launched:
    """A kernel started by a launcher process of its own."""

    launcher: subprocess.Popen[str]
    """The launcher (the kernel's parent and its `JPY_PARENT_PID`)."""
    kernel_pid: int
    """The kernel process (not our child: it cannot be waited for, only watched)."""
    connection_file: str
    """The kernel's connection file, for a client of the test's own."""


@contextlib.contextmanager
def launched_kernel(kernel_name: str, *, ready: bool, timeout: float = 60) -> Iterator[Launched]:
    """Start a kernel from a launcher process; kill whatever is left of both at the end.

    Args:
        kernel_name: The kernelspec to start.
        ready: Whether the launcher waits until the kernel answers before it reports.
        timeout: Seconds the launcher may take to report the kernel's pid.
    """
    launcher = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, kernel_name, "ready" if ready else "starting"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    kernel_pid: int | None = None
    connection_file = ""
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(launcher.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        assert line, "the launcher printed nothing"
        pid, _, connection_file = line[0].strip().partition(" ")
        assert pid.isdigit(), f"the launcher printed {line!r}"
        kernel_pid = int(pid)
        yield Launched(launcher, kernel_pid, connection_file)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(timeout)
        if kernel_pid is not None and not gone(kernel_pid):
            os.kill(kernel_pid, signal.SIGKILL)
        for stream in (launcher.stdin, launcher.stdout):
            if stream is not None:
                stream.close()
        if connection_file:  # the launcher was killed before it could remove it
            Path(connection_file).unlink(missing_ok=True)


SIGINT_CHILD = """
import pathlib, signal, sys, time
done = pathlib.Path(sys.argv[1])
def on_sigint(signum, frame):
    done.write_text("SIGINT")
    sys.exit(3)
signal.signal(signal.SIGINT, on_sigint)
print("child ready", flush=True)
time.sleep(60)
done.write_text("slept")
"""
"""A child process for a cell (run with a file path): it says when it can be interrupted, and
writes down what ended it (`SIGINT`, or `slept` after a minute)."""


def check_session(
    connection_file: Path, *, ip: str | None = None, ipv6: bool = False, timeout: float = 30.0
) -> None:
    """Execute a cell and shut the kernel down through a jupyter_client client of the file."""
    from jupyter_client.blocking.client import BlockingKernelClient

    context = zmq.Context()
    if ipv6:
        context.setsockopt(zmq.IPV6, 1)  # jupyter_client's sockets are IPv4 unless told
    kc = BlockingKernelClient(connection_file=str(connection_file), context=context)
    kc.load_connection_file()
    if ip is not None:
        kc.ip = ip
    kc.start_channels()
    try:
        msg_id = kc.execute("print(6 * 7)")
        assert _wait(kc.get_shell_msg, msg_id, timeout)["content"]["status"] == "ok"
        stream = _wait(kc.get_iopub_msg, msg_id, timeout, "stream")
        assert stream["content"]["text"] == "42\n"
        assert _wait(kc.get_control_msg, kc.shutdown(), timeout)["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        context.term()


def _wait(get: Any, msg_id: str, timeout: float, msg_type: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = get(timeout=1)
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id and msg_type in (None, msg["msg_type"]):
            return msg
    raise TimeoutError(f"nothing for {msg_id}")
