"""A GUI loop and the kernel's life: shutdown, restart, switching toolkits, missing toolkits.

Each test starts a kernel of its own: these change what the process holds for good (a Qt
application, a Qt binding picked at first import).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest
from conftest import KERNELS, gui_kernel, need
from kernel_driver import code
from kernel_process import wait_gone

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import GuiKernel

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=KERNELS)
def fresh(request: pytest.FixtureRequest, xvfb_display: str) -> Iterator[GuiKernel]:
    """A new kernel (asyncio and trio) with an Xvfb display and Qt offscreen."""
    need("tk", "qt")
    with gui_kernel(request.param, {"DISPLAY": xvfb_display, "QT_QPA_PLATFORM": "offscreen"}) as k:
        yield k


@pytest.mark.parametrize("toolkit", ["qt", "tk"])
def test_shutdown_while_a_gui_loop_runs(fresh: GuiKernel, toolkit: str) -> None:
    km, d = fresh
    busy = {  # a toolkit timer every millisecond: the GUI loop is never idle
        "qt": "from PyQt6 import QtCore\nt = QtCore.QTimer()\nt.timeout.connect(int)\nt.start(1)",
        "tk": "import tkinter as tk\nr = tk.Tk()\ndef again():\n    r.after(1, again)\nagain()",
    }[toolkit]
    d.run(f"%gui {toolkit}\n{busy}")
    process = km.provisioner.process  # type: ignore[union-attr]
    pid = process.pid
    reply = d.reply(d.send("shutdown_request", {"restart": False}, channel="control"))
    assert reply["content"]["status"] == "ok"
    assert wait_gone(pid, 10), "the kernel did not exit after shutdown_request"
    assert process.wait(5) == 0


def test_restart_while_a_gui_loop_runs(fresh: GuiKernel) -> None:
    km, d = fresh
    d.run("%gui tk\nimport tkinter as tk\nroot = tk.Tk()")
    old = km.provisioner.process.pid  # type: ignore[union-attr]
    km.restart_kernel(now=False)
    d.kc.wait_for_ready(timeout=60)
    assert wait_gone(old, 10)
    d.drain()
    out = d.run(
        code("""
        %gui tk
        import threading, tkinter as tk
        root = tk.Tk()
        fired = threading.Event()
        root.after(0, fired.set)
    """)
    )
    assert out == ""
    assert d.run("##thread\nprint(fired.wait(10))") == "True\n"


def test_switching_between_toolkits_at_run_time(fresh: GuiKernel) -> None:
    _, d = fresh
    d.run(
        code("""
        import threading, tkinter as tk
        from PyQt6 import QtCore
        %gui tk
        root = tk.Tk()
        tk_fired, qt_fired = threading.Event(), threading.Event()
    """)
    )
    d.run("%gui qt\nroot.after(0, tk_fired.set)\nQtCore.QTimer.singleShot(0, qt_fired.set)")
    out = d.run("##thread\nprint(qt_fired.wait(10), tk_fired.wait(0.2))")
    assert out == "True False\n"  # only the active toolkit runs
    d.run("%gui tk")
    assert d.run("##thread\nprint(tk_fired.wait(10))") == "True\n"
    assert d.run("print(get_ipython().active_eventloop)") == "tk\n"


def test_qt_that_cannot_start_is_an_error_not_a_crash() -> None:
    need("qt")
    with gui_kernel("async", {"QT_QPA_PLATFORM": "no-such-qpa"}) as (_, d):
        reply = d.reply(d.execute("get_ipython().enable_gui('qt')"))["content"]
        assert reply["ename"] == "RuntimeError"
        assert "would abort the kernel" in reply["evalue"]
        assert "no-such-qpa" in reply["evalue"]
        assert d.run("print(get_ipython().active_eventloop)") == "None\n"


def _ipythons_error(gui: str, env: dict[str, str]) -> str:
    """The message of the error IPython's own `%gui` integration raises for `gui`."""
    script = (
        "from IPython.terminal.pt_inputhooks import get_inputhook_name_and_func\n"
        "try:\n"
        f"    get_inputhook_name_and_func({gui!r})\n"
        "except ImportError as exc:\n"
        "    print(str(exc))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, **env},
    )
    assert done.stdout.strip(), "IPython raised nothing"
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("gui", "env"),
    [("wx", {}), ("qt6", {"QT_API": "pyside6"})],
    ids=["wx", "qt binding"],
)
def test_a_missing_toolkit_fails_as_in_ipython(gui: str, env: dict[str, str]) -> None:
    if gui == "wx" and importlib.util.find_spec("wx") is not None:
        pytest.skip("wx is installed")
    if gui == "qt6" and importlib.util.find_spec("PySide6") is not None:
        pytest.skip("PySide6 is installed")
    expected = _ipythons_error(gui, env)
    with gui_kernel("async", {"QT_QPA_PLATFORM": "offscreen", **env}) as (_, d):
        # The shell method raises the error; `%gui` prints it (IPython's magic logs it). Once
        # only for Qt: IPython's first attempt leaves the binding's choice changed.
        reply = d.reply(d.execute(f"get_ipython().enable_gui({gui!r})"))["content"]
        assert reply["status"] == "error"
        assert reply["evalue"].strip() == expected
        if gui == "wx":
            mid = d.execute(f"%gui {gui}")
            assert d.reply(mid)["content"]["status"] == "ok"
            d.wait_until(lambda: expected in "".join(d.errors(mid)), "the error on stderr")
        assert d.run("print(get_ipython().active_eventloop)") == "None\n"
        start = time.perf_counter()
        d.reply(d.send("kernel_info_request", {}))
        assert time.perf_counter() - start < 5
