"""The launcher watch in a process of its own: it notices the launcher's death, asks for a clean
stop, and ends the process itself if the stop does not come in time.

Each test runs a small script whose `JPY_PARENT_PID` names a process that has already exited,
so the watch finds the launcher gone at its first look. (`test_shutdown.py` kills real
launchers of real kernels.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from async_kernel._parent import ORPHAN_EXIT_CODE, ParentWatch

__all__ = ()

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 20.0

SCRIPT = """
import sys, threading, time
sys.path.insert(0, {root!r})
from async_kernel._parent import ParentWatch

stopped = threading.Event()

def on_gone():
    print("on_gone", flush=True)
    if {stops!r}:
        watch.stop()  # the kernel stopped in time
        stopped.set()

watch = ParentWatch(on_gone, interval=0.05, exit_after=0.5).start()
if {stops!r}:
    stopped.wait({timeout!r})
    time.sleep(1.0)  # longer than exit_after: the watch must not end the process now
    print("went on", flush=True)
    sys.exit(0)
time.sleep({timeout!r})  # a stop that never comes
print("still running", flush=True)
"""


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(TIMEOUT)
    return child.pid


def run(*, stops: bool) -> tuple[subprocess.CompletedProcess[str], float]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = textwrap.dedent(SCRIPT).format(root=root, stops=stops, timeout=TIMEOUT)
    env = {**os.environ, "JPY_PARENT_PID": str(dead_pid())}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        check=False,
    )
    return done, time.monotonic() - start


def test_the_watch_ends_a_process_whose_stop_does_not_come() -> None:
    done, elapsed = run(stops=False)
    assert done.returncode == ORPHAN_EXIT_CODE, done.stderr
    assert done.stdout == "on_gone\n"
    assert "did not stop within 0.5 s" in done.stderr
    assert elapsed < TIMEOUT / 2


def test_a_kernel_that_stopped_in_time_is_left_alone() -> None:
    done, _ = run(stops=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "on_gone\nwent on\n"


def test_a_launcher_that_still_runs_is_not_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))  # this process: alive
    assert not ParentWatch(lambda: None).launcher_gone()
    monkeypatch.setenv("JPY_PARENT_PID", str(dead_pid()))
    assert ParentWatch(lambda: None).launcher_gone()
