"""Units of `%gui` in-process: names, errors, the Tk hook, Qt's display check, the pyplot guard.

What needs a display or a kernel (windows, timers of a running toolkit, the protocol) is in
`tests/gui/`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any, cast

import pytest

import async_kernel.ipython._gui as gui
import async_kernel.ipython._mpl_guard as mpl_guard
from async_kernel.ipython._gui import MainGui, tk_hook
from async_kernel.ipython._gui_loops import InputHookEventLoop
from async_kernel.ipython._inputhook import HookRunner

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10.0


class FakeShell:
    """Stands for the shell (`MainGui` only sets `active_eventloop` when a hook fails)."""

    active_eventloop: str | None = None


def _shell() -> InteractiveShell:
    return cast("InteractiveShell", FakeShell())


def _in_thread(func: Any) -> BaseException | None:
    """Run `func` on a new thread; return what it raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            func()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(TIMEOUT)
    return raised[0] if raised else None


def test_all_is_declared() -> None:
    assert set(gui.__all__) == {"MainGui", "main_gui", "tk_hook"}
    assert set(mpl_guard.__all__) == {"MainThreadRequired", "guard_pyplot"}


@pytest.mark.parametrize("name", [None, "inline", "agg", "nbagg", "webagg", "headless"])
def test_names_without_an_event_loop_turn_it_off(name: str | None) -> None:
    main = MainGui()
    assert main.enable(name, _shell()) is None
    assert main.active is None


def test_an_unknown_toolkit_is_ipythons_error() -> None:
    with pytest.raises(KeyError, match="No event loop integration for 'nope'"):
        MainGui().enable("nope", _shell())


@pytest.mark.skipif(importlib.util.find_spec("wx") is not None, reason="wx is installed")
def test_a_toolkit_that_is_not_installed_is_an_import_error() -> None:
    with pytest.raises(ImportError, match="wx"):
        MainGui().enable("wx", _shell())


def test_gui_off_the_main_thread_names_the_requirement() -> None:
    error = _in_thread(lambda: MainGui().enable("qt", _shell()))
    assert isinstance(error, RuntimeError)
    assert "main thread" in str(error)
    assert "%gui qt" in str(error)
    # Turning off what is not on is harmless anywhere.
    assert _in_thread(lambda: MainGui().enable(None, _shell())) is None


def test_gui_asyncio_on_a_trio_loop_says_what_to_do() -> None:
    trio = pytest.importorskip("trio")

    async def main() -> None:
        with pytest.raises(RuntimeError, match="asyncio backend"):
            MainGui().enable("asyncio", _shell())

    trio.run(main)


def test_tk_switches_on_and_off() -> None:
    pytest.importorskip("_tkinter", reason="this Python is built without Tk")
    shell = FakeShell()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, InputHookEventLoop)
        main = MainGui()
        assert main.enable("tk", cast("InteractiveShell", shell)) == "tk"
        assert loop.hook_selector.runner is not None
        await asyncio.sleep(0.01)  # a wait through Tcl's event loop
        assert main.enable("asyncio", cast("InteractiveShell", shell)) == "asyncio"
        assert loop.hook_selector.runner is None
        main.enable("tk", cast("InteractiveShell", shell))
        main.disable()
        assert loop.hook_selector.runner is None

    with asyncio.Runner(loop_factory=InputHookEventLoop) as runner:
        runner.run(main())


# --- the Tk hook (Tcl only: no display needed) -----------------------------------------


def _tcl() -> Any:
    _tkinter = pytest.importorskip("_tkinter", reason="this Python is built without Tk")
    return _tkinter.create(None, "test", "Tk", False, True, False, False, None)


def test_tk_hook_runs_tcl_events_until_the_context_is_ready() -> None:
    tkapp = _tcl()
    loop_r, loop_w = socket.socketpair()
    fired: list[str] = []

    def timer() -> None:  # a Tcl timer: runs only while the hook runs Tcl's loop
        fired.append("timer")
        loop_w.send(b"x")  # then the "event loop" has work: the hook must return

    tkapp.createcommand("ak_timer", timer)
    tkapp.call("after", 10, "ak_timer")
    runner = HookRunner(tk_hook(tkapp), loop_fd=loop_r.fileno(), on_failure=print)
    try:
        assert runner.wait(TIMEOUT) == 0.0
        assert fired == ["timer"]
    finally:
        runner.close()
        loop_r.close()
        loop_w.close()


def test_tk_hook_polls_where_tcl_cannot_watch_a_socket() -> None:
    tkapp = _tcl()

    class NoFileHandlers:  # Tk on Windows
        def dooneevent(self, flags: int) -> int:
            return tkapp.dooneevent(flags)

    fired: list[str] = []
    tkapp.createcommand("ak_timer", lambda: fired.append("timer"))
    tkapp.call("after", 10, "ak_timer")
    loop_r, loop_w = socket.socketpair()
    runner = HookRunner(tk_hook(NoFileHandlers()), loop_fd=loop_r.fileno(), on_failure=print)
    try:
        assert runner.wait(0.2) == 0.0
        assert fired == ["timer"]
    finally:
        runner.close()
        loop_r.close()
        loop_w.close()


# --- Qt's display check ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({}, True),
        ({"DISPLAY": ":1"}, False),
        ({"WAYLAND_DISPLAY": "wayland-0"}, False),
        ({"QT_QPA_PLATFORM": "offscreen"}, False),
    ],
)
def test_qt_without_a_display_is_refused_not_aborted(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], problem: bool
) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    found = gui._qt_display_problem()  # pyright: ignore[reportPrivateUsage]
    assert (found is not None) == problem
    if found is not None:
        assert "QT_QPA_PLATFORM=offscreen" in found


# --- the pyplot guard (in a fresh interpreter: it changes pyplot for good) -------------

_GUARD_SCRIPT = """
import json, threading
import matplotlib
matplotlib.use("tkagg")
import matplotlib.pyplot as plt
from async_kernel.ipython._mpl_guard import guard_pyplot

class Main:
    def __init__(self): self.calls = []
    def call_soon(self, func, *args, **kwargs): self.calls.append(func.__name__)

main = Main()
guard_pyplot(main)
guard_pyplot(main)  # once only
out = {"twice": getattr(plt.new_figure_manager, "__wrapped__", None) is not None
       and not hasattr(plt.new_figure_manager.__wrapped__, "__wrapped__")}

def attempt(name, func):
    try:
        func()
        out[name] = "ok"
    except Exception as exc:
        out[name] = type(exc).__name__ + ": " + str(exc)

def in_thread():
    attempt("figure", plt.figure)
    attempt("pause", lambda: plt.pause(0.01))
    attempt("show", plt.show)
    attempt("show_block", lambda: plt.show(block=True))
    attempt("draw_all", plt.draw_all)

t = threading.Thread(target=in_thread, name="worker"); t.start(); t.join()
out["forwarded"] = main.calls
matplotlib.use("agg")
t = threading.Thread(target=lambda: attempt("agg_figure", plt.figure)); t.start(); t.join()
print(json.dumps(out))
"""


def test_pyplot_guard_keeps_gui_windows_on_the_main_thread() -> None:
    pytest.importorskip("_tkinter", reason="this Python is built without Tk")
    pytest.importorskip("matplotlib")
    done = subprocess.run(
        [sys.executable, "-c", _GUARD_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["twice"]
    for name in ("figure", "pause", "show_block"):
        assert out[name].startswith("MainThreadRequired: "), (name, out[name])
        assert "main thread" in out[name]
        assert "'worker'" in out[name]
    assert out["show"] == out["draw_all"] == "ok"
    assert out["forwarded"] == ["show", "draw_all"]
    assert out["agg_figure"] == "ok"


@pytest.mark.parametrize(("platform", "problem"), [("offscreen", False), ("no-such-qpa", True)])
def test_qt_that_would_abort_is_found_out_in_a_child(
    monkeypatch: pytest.MonkeyPatch, platform: str, problem: bool
) -> None:
    pytest.importorskip("PyQt6")
    monkeypatch.setenv("QT_QPA_PLATFORM", platform)
    found = gui._qt_start_problem("pyqt6")  # pyright: ignore[reportPrivateUsage]
    assert (found is not None) == problem
    if found is not None:
        assert "would abort the kernel" in found
        assert "no-such-qpa" in found  # Qt's own words come along
    assert gui._qt_start_problem("qt4") is None  # pyright: ignore[reportPrivateUsage]


def test_the_same_toolkit_again_keeps_its_hook() -> None:
    pytest.importorskip("_tkinter", reason="this Python is built without Tk")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, InputHookEventLoop)
        main = MainGui()
        main.enable("tk", _shell())
        runner = loop.hook_selector.runner
        main.enable("tk", _shell())
        assert loop.hook_selector.runner is runner  # not detached and attached again
        main.disable()

    with asyncio.Runner(loop_factory=InputHookEventLoop) as runner:
        runner.run(main())


def test_a_failing_hook_turns_the_gui_off_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(context: object) -> None:
        raise OSError("the toolkit's display went away")

    monkeypatch.setattr(gui, "_prepare", lambda name: (broken, None))
    shell = FakeShell()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, InputHookEventLoop)
        main = MainGui()
        shell.active_eventloop = main.enable("wx", cast("InteractiveShell", shell))
        assert shell.active_eventloop == "wx"
        await asyncio.sleep(0.01)  # the loop waits: the hook runs and fails
        assert main.active is None
        assert shell.active_eventloop is None
        assert loop.hook_selector.runner is None
        await asyncio.sleep(0.01)  # a plain wait now

    with asyncio.Runner(loop_factory=InputHookEventLoop) as runner:
        runner.run(main())
    err = capsys.readouterr().err
    assert "The wx event loop failed (OSError: the toolkit's display went away)" in err
    assert "%gui wx" in err
