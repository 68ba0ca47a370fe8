"""GUI toolkits on the kernel's main thread: `%gui`, and `%matplotlib qt|tk|…` through it.

`MainGui.enable(name)` prepares the toolkit on the main thread (Qt's `QApplication`, a Tcl
interpreter for Tk), takes its input hook and attaches it to the main event loop
(`gui_loops.attach`): from then on, whenever the main shell is idle or its cells await, the
toolkit's own event loop runs until the kernel's loop has work again. `enable(None)` detaches
it, and the main loop is a plain loop again. Tk has a hook of its own here (one that serves
every Tk window, not only the default root's); the other toolkits use IPython's
(`IPython.terminal.pt_inputhooks`), so a toolkit that is not installed fails with IPython's
ImportError.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from async_kernel.callers._caller import Caller
from async_kernel.ipython._gui_loops import attach
from async_kernel.ipython._mpl_guard import guard_pyplot

if TYPE_CHECKING:
    from collections.abc import Callable

    from IPython.core.interactiveshell import InteractiveShell

    from async_kernel.ipython._gui_loops import LoopHook
    from async_kernel.ipython._inputhook import HookContext

__all__ = ("MainGui", "main_gui", "tk_hook")

log = logging.getLogger("async_kernel")

NO_EVENT_LOOP = frozenset(
    {"inline", "headless", "agg", "nbagg", "notebook", "webagg", "ipympl", "widget"}
)
"""Names `%matplotlib` passes to `enable_gui` for backends that need no GUI event loop."""


def tk_hook(tkapp: Any) -> Callable[[HookContext], None]:
    """The input hook for Tk: Tcl's event loop runs until the context turns readable.

    Tcl dispatches the events of every interpreter of the thread, so a private interpreter
    serves every Tk window (matplotlib makes one `Tk` per figure; the default root may be
    gone).
    """
    import _tkinter

    def hook(context: HookContext) -> None:
        fd = context.fileno()
        if not hasattr(tkapp, "createfilehandler"):  # Windows: Tcl cannot watch a socket
            while not context.input_is_ready():
                while tkapp.dooneevent(_tkinter.ALL_EVENTS | _tkinter.DONT_WAIT):
                    pass
                time.sleep(0.01)
            return
        done: list[bool] = []
        tkapp.createfilehandler(fd, _tkinter.READABLE, lambda *_: done.append(True))
        try:
            while not done:
                tkapp.dooneevent(_tkinter.ALL_EVENTS)
        finally:
            tkapp.deletefilehandler(fd)

    return hook


def _qt_display_problem() -> str | None:
    """Why Qt would abort the process when it starts here, if it would (no display on Linux)."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return (
        "Qt needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set for the kernel "
        "(Qt would abort it). Start the kernel where there is a display, or with "
        "QT_QPA_PLATFORM=offscreen to draw without showing windows."
    )


_QT_PACKAGES = {"pyqt6": "PyQt6", "pyside6": "PySide6", "pyqt5": "PyQt5", "pyside2": "PySide2"}


def _qt_start_problem(api: str) -> str | None:
    """Why Qt would abort the process when it starts here, found out in a child process.

    Qt ends the process when its platform plugin cannot start (a display it cannot reach, a
    missing system library such as libxcb-cursor0); a child's death costs nothing.
    """
    package = _QT_PACKAGES.get(api)
    if package is None:
        return None
    probe = f"from {package}.QtWidgets import QApplication\nQApplication(['probe'])"
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):  # no verdict: let Qt try
        return None
    if done.returncode == 0:
        return None
    said = "\n".join(done.stderr.strip().splitlines()[-6:])
    return f"Qt cannot start in this kernel's environment (it would abort the kernel):\n{said}"


def _prepare(name: str) -> tuple[Callable[[HookContext], object], object]:
    """Load toolkit `name` on this (the main) thread; return its input hook and what to keep.

    Raises:
        ImportError: The toolkit is not installed (IPython's error for its hook).
        KeyError: No toolkit has that name (IPython's `UnknownBackend`).
        RuntimeError: The toolkit cannot start here.
    """
    if name == "tk":
        import _tkinter  # the ImportError of a Python built without Tk, as IPython's

        # A Tcl interpreter without Tk: no window, no display, no user profile sourced.
        tkapp = _tkinter.create(None, "async_kernel", "Tk", False, True, False, False, None)
        return tk_hook(tkapp), tkapp
    from IPython.terminal.pt_inputhooks import get_inputhook_name_and_func

    _, hook = get_inputhook_name_and_func(name)
    if not name.startswith("qt"):
        return hook, None
    from IPython.external.qt_for_kernel import QtCore, QtGui

    # Made now, not at the hook's first run: a cell that follows `%gui qt` at once may build
    # widgets before the loop ever waited.
    app = QtCore.QCoreApplication.instance()
    if app is None:
        from IPython.external.qt_for_kernel import QT_API

        if (problem := _qt_display_problem() or _qt_start_problem(QT_API)) is not None:
            raise RuntimeError(problem)
        app = QtGui.QApplication(["async-kernel"])
    return hook, app


def _convert(gui: str | None) -> str | None:
    """The IPython name of `gui` (matplotlib says `macosx` for IPython's `osx`)."""
    if gui is None:
        return None
    gui = gui.lower()
    return "osx" if gui == "macosx" else gui


def _on_main_thread(name: str | None) -> None:
    if threading.current_thread() is threading.main_thread():
        return
    what = f"%gui {name}" if name else "%gui"
    msg = (
        f"{what} must run in a main-shell cell: GUI toolkits live on the main thread, and this "
        f"code runs on thread {threading.current_thread().name!r} (a `##thread` cell, a "
        "subshell or a thread of its own)."
    )
    raise RuntimeError(msg)


class MainGui:
    """The GUI integration of the main thread: which toolkit runs while the main loop waits."""

    def __init__(self) -> None:
        self.active: str | None = None
        """The toolkit whose events run while the main shell waits (None: the plain loop)."""
        self._hook: Callable[[HookContext], object] | None = None
        self._loop: LoopHook | None = None
        self._shell: InteractiveShell | None = None
        # The Tk hook and its Tcl interpreter, the QApplication: made once, kept for good.
        self._tk_hook: Callable[[HookContext], object] | None = None
        self._keep: list[object] = []

    def enable(self, gui: str | None, shell: InteractiveShell) -> str | None:
        """Run toolkit `gui`'s events while the main shell waits; None turns that off.

        Switching from one toolkit to another replaces it. Returns the active name.

        Raises:
            ImportError: The toolkit is not installed.
            RuntimeError: Not on the main thread, or the toolkit cannot start here.
        """
        name = _convert(gui)
        if name is None or name in NO_EVENT_LOOP:
            if self._loop is not None:
                _on_main_thread(None)
            self.disable()
            return None
        _on_main_thread(name)
        if name == "asyncio":
            return self._asyncio()
        if name == "tk" and self._tk_hook is not None:
            hook = self._tk_hook
        else:
            hook, keep = _prepare(name)
            if keep is not None and keep not in self._keep:
                self._keep.append(keep)
            if name == "tk":
                self._tk_hook = hook
        self._shell = shell
        if hook is not self._hook or self._loop is None:
            self.disable()
            self._loop = attach(hook, on_failure=self._failed)
            self._hook = hook
        self.active = name
        if "matplotlib.pyplot" in sys.modules:
            guard_pyplot(Caller())
        return name

    def disable(self) -> None:
        """Detach the hook: the main loop waits as a plain loop again."""
        loop, self._loop = self._loop, None
        self._hook = None
        self.active = None
        if loop is not None:
            loop.detach()

    def _asyncio(self) -> str:
        """`%gui asyncio`: the main loop is asyncio already; only the GUI hook goes."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            msg = (
                "%gui asyncio: this kernel's main loop is trio; start the kernel with the "
                "asyncio backend to run asyncio code on it."
            )
            raise RuntimeError(msg) from None
        self.disable()
        self.active = "asyncio"
        return "asyncio"

    def _failed(self, exc: BaseException) -> None:
        """The hook raised: go back to the plain loop and say so."""
        name = self.active
        log.error("the %s event loop failed; GUI integration is off", name, exc_info=exc)
        self.disable()
        if self._shell is not None:
            self._shell.active_eventloop = None
        print(
            f"The {name} event loop failed ({type(exc).__name__}: {exc}); "
            f"GUI integration is off. Run `%gui {name}` to turn it on again.",
            file=sys.stderr,
        )


main_gui = MainGui()
"""The main thread's GUI integration (one per process, like the main thread)."""
