"""Fixtures of the GUI tests: an Xvfb display, and kernels with a GUI toolkit at hand.

Tk needs an X display: a private Xvfb server runs for the session (`-displayfd` lets it pick
a free display number). Qt draws with `QT_QPA_PLATFORM=offscreen` and needs none. A missing
prerequisite (Xvfb, PyQt6, a Python built with Tk) skips the tests that need it, saying what
to install; with `ASYNC_KERNEL_GUI=require` in the environment (`.ci/run` sets it where Xvfb
is installed, and in CI) it fails them instead, so a check cannot pass by skipping them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from kernel_driver import Driver

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jupyter_client.manager import KernelManager

REQUIRE_ENV = "ASYNC_KERNEL_GUI"
"""Set to `require` to make a missing prerequisite an error instead of a skip."""

KERNELS = ("async", "async-trio")
"""The kernelspecs of the root conftest: one per backend."""

GuiKernel = tuple["KernelManager", Driver]


def missing(what: str) -> str | None:
    """Why `what` ("xvfb", "tk" or "qt") cannot be used here, or None when it can."""
    if what == "xvfb" and shutil.which("Xvfb") is None:
        return "Xvfb is not installed: apt-get install -y xvfb"
    if what == "tk" and importlib.util.find_spec("_tkinter") is None:
        return "this Python is built without Tk (_tkinter): build it with tk-dev installed"
    if what == "qt" and importlib.util.find_spec("PyQt6") is None:
        return 'PyQt6 is not installed: pip install -e ".[test]"'
    return None


def need(*what: str) -> None:
    """Skip (or, when required, fail) the test unless every prerequisite in `what` is there."""
    for name in what:
        if (reason := missing(name)) is None:
            continue
        if os.environ.get(REQUIRE_ENV) == "require":
            pytest.fail(f"{REQUIRE_ENV}=require, but the GUI tests cannot run: {reason}")
        pytest.skip(f"GUI test: {reason}")


@pytest.fixture(scope="session")
def xvfb_display() -> Iterator[str]:
    """The name (`:N`) of a private Xvfb display, running for the whole session."""
    need("xvfb")
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    try:
        # Xvfb writes the display it took, and a newline, once it accepts connections; the
        # pipe stays open meanwhile (Xvfb dies if it cannot write the whole line).
        number = b""
        deadline = time.monotonic() + 30
        while not number.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([read], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(read, 64) if ready else b""
            if not chunk:
                break
            number += chunk
        text = number.decode().strip()
        assert text.isdigit(), f"Xvfb reported no display number (exit code {server.poll()})"
        yield f":{text}"
    finally:
        os.close(read)
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


@contextlib.contextmanager
def gui_kernel(kernel_name: str, env: dict[str, str]) -> Iterator[GuiKernel]:
    """A kernel started with `env` added to the environment: its manager and a driver."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(
        kernel_name=kernel_name, startup_timeout=60, env={**os.environ, **env}
    )
    try:
        yield km, Driver(kc)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=not km.is_alive())  # a kernel that is gone is only cleaned up


@pytest.fixture(params=KERNELS, scope="module")
def qt_kernel(request: pytest.FixtureRequest) -> Iterator[GuiKernel]:
    """A kernel (asyncio and trio) where Qt draws offscreen."""
    need("qt")
    with gui_kernel(request.param, {"QT_QPA_PLATFORM": "offscreen"}) as kernel:
        yield kernel


@pytest.fixture(params=KERNELS, scope="module")
def tk_kernel(request: pytest.FixtureRequest, xvfb_display: str) -> Iterator[GuiKernel]:
    """A kernel (asyncio and trio) with an Xvfb display for Tk (and Qt offscreen)."""
    need("tk")
    with gui_kernel(request.param, {"DISPLAY": xvfb_display, "QT_QPA_PLATFORM": "offscreen"}) as k:
        yield k


MPL_FIGURE = """
import threading
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
drawn = threading.Event()
draws = []
def on_draw(event):
    draws.append(threading.current_thread().name)
    drawn.set()
fig.canvas.mpl_connect("draw_event", on_draw)
ax.plot([1, 2])
"""


def check_matplotlib_window(d: Driver, backend: str, shown: tuple[str, str], new: str) -> None:
    """`%matplotlib backend` draws on the main thread, and threads keep off its windows.

    Args:
        d: The kernel's driver.
        backend: The matplotlib backend (`qt`, `tk`).
        shown: An expression that says whether the figure's window is on screen, and what it
            prints when it is.
        new: Code that opens a new figure window (refused in a `##thread` cell).
    """
    d.run(f"%matplotlib {backend}")
    d.run(MPL_FIGURE)
    assert d.run("##thread\nprint(drawn.wait(10))") == "True\n"
    expression, visible = shown
    assert d.run(f"print({expression}, set(draws))") == f"{visible} {{'MainThread'}}\n"
    # A new window from a thread: refused, with the reason.
    reply = d.reply(d.execute(f"##thread\n{new}"))["content"]
    assert reply["ename"] == "MainThreadRequired"
    assert "main thread" in reply["evalue"]
    # Plotting into the main thread's figure from a thread works: the redraw goes to main.
    d.run("drawn.clear()")
    d.run("##thread\nax.plot([2, 1])\nplt.draw()")
    assert d.run("##thread\nprint(drawn.wait(10))") == "True\n"
    assert d.run("print(len(ax.lines), set(draws))") == "2 {'MainThread'}\n"
    # plt.pause and flush_events run the GUI from a cell (which blocks meanwhile).
    assert d.run("plt.pause(0.05)\nfig.canvas.flush_events()\nprint('ok')") == "ok\n"
    d.run("plt.close('all')\n%matplotlib inline")
    assert d.run(PLAIN_LOOP_CHECK) == "None []\n"


def kernel_info_times(driver: Driver, *, count: int = 30, seconds: float = 0.5) -> list[float]:
    """Round trips of kernel_info_request, one after another: at least `count`, for `seconds`.

    Long enough that a GUI timer firing every few ms fires during them even when other
    processes load the machine.
    """
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < count or time.perf_counter() < end:
        start = time.perf_counter()
        driver.reply(driver.send("kernel_info_request", {}))
        times.append(time.perf_counter() - start)
    return times


def idle_cost(pid: int, seconds: float) -> tuple[float, float]:
    """CPU seconds per second and context switches per second of process `pid`, left alone."""

    def sample() -> tuple[float, int]:
        cpu = 0.0
        switches = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                cpu += int((task / "schedstat").read_text().split()[0]) / 1e9
                for line in (task / "status").read_text().splitlines():
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
            except (OSError, ValueError, IndexError):  # the thread ended meanwhile
                continue
        return cpu, switches

    cpu0, switches0 = sample()
    start = time.perf_counter()
    time.sleep(seconds)  # the measurement window itself: nothing is ordered by it
    elapsed = time.perf_counter() - start
    cpu1, switches1 = sample()
    return (cpu1 - cpu0) / elapsed, (switches1 - switches0) / elapsed


PLAIN_LOOP_CHECK = """
import threading as _t
_left = [t.name for t in _t.enumerate() if t.name == "async_kernel_gui_watcher"]
try:
    import asyncio as _a
    _loop = _a.get_running_loop()
    _left += ["runner"] if _loop.hook_selector.runner is not None else []
    _left += [name for name in ("call_soon", "call_at") if name in vars(_loop)]
except RuntimeError:
    from trio._core._run import GLOBAL_RUN_CONTEXT as _g
    _left += [type(i).__name__ for i in _g.runner.instruments["_all"]]
print(get_ipython().active_eventloop, _left)
"""
"""A cell that prints the active event loop and what of the GUI hook is left in the loop."""
