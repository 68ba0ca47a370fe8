"""Everything the kernel changes in the interpreter, installed in one place and undone at teardown.

A kernel running in this process (the usual case, but also tests and embedding) replaces
`sys.stdout`/`sys.stderr`, `sys.displayhook`, `sys.excepthook`, IPython's builtins,
`input`/`getpass`, the environment that ipykernel sets and `sys.modules["ipykernel.zmqshell"]`
(what libraries look at to detect a Jupyter kernel), `time.sleep` (interruptible in kernel
threads), the SIGINT and SIGTERM handlers,
`threading.Thread.start` (to remember which cell started a thread), the GIL switch interval,
the `comm` package's factories, the default matplotlib backend and (once it is loaded)
matplotlib-inline's `show` and `flush_figures`. `ProcessPatches.restore` puts every one of them
back as it was. (The debugger, while a client is attached, sets `sys.breakpointhook` to
debugpy's; it undoes that on detach and at shutdown: see `requests._debugstate`.)
"""

from __future__ import annotations

import _thread
import asyncio
import builtins
import getpass
import os
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import comm

from async_kernel.ipython._compat import NOTEBOOK_ENVIRON, SHELL_MODULE, shell_module
from async_kernel.output._comm import Comm
from async_kernel.output._routing import remember_starter

if TYPE_CHECKING:
    from collections.abc import Callable

    from async_kernel.ipython._shell import AsyncInteractiveShell
    from async_kernel.output._comm import KernelCommManager
    from async_kernel.output._stdin import StdinBroker
    from async_kernel.output._stdio import StdIO
    from async_kernel.requests._interrupts import Interrupter
    from async_kernel.wire._outbox import Outbox

__all__ = ("ProcessPatches",)

_INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


class ProcessPatches:
    """Installs the kernel's process-wide changes and undoes them in reverse order."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], object]] = []

    @property
    def installed(self) -> bool:
        """Whether any change is in place."""
        return bool(self._undo)

    def set(self, owner: Any, name: str, value: Any) -> None:
        """Set `owner.name` to `value`, to be restored by `restore`."""
        original = getattr(owner, name)
        setattr(owner, name, value)
        self._undo.append(lambda: setattr(owner, name, original))

    def install(
        self,
        *,
        interrupter: Interrupter,
        stdin: StdinBroker,
        stdio: StdIO,
        shell: AsyncInteractiveShell,
        comms: KernelCommManager,
        outbox: Outbox,
        switch_interval: float,
        on_terminate: Callable[[], object],
    ) -> None:
        """Install every change (from the main thread: the signal handlers need it).

        SIGTERM calls `on_terminate` from a new thread (a signal handler must take no locks).
        """
        previous = signal.signal(signal.SIGINT, interrupter.on_sigint)
        self._undo.append(lambda: signal.signal(signal.SIGINT, previous))
        self.wake_loop_on_signals()
        self.set(time, "sleep", interrupter.sleep)
        self.set(builtins, "input", stdin.input)
        self.set(getpass, "getpass", stdin.getpass)
        self.set(sys, "stdout", stdio.stdout)
        self.set(sys, "stderr", stdio.stderr)
        # One displayhook and one set of IPython builtins for the process, so that concurrent
        # cells never swap them back and forth.
        self.set(sys, "displayhook", shell.displayhook)
        # GUI toolkits report an exception of a callback to `sys.excepthook`, and PyQt aborts
        # the process when that is Python's own; IPython swaps it around each cell, so it is
        # set here, once, not when a GUI is turned on.
        self.set(sys, "excepthook", shell.excepthook)
        shell.builtin_trap.activate()
        self._undo.append(shell.builtin_trap.deactivate)
        self.remember_thread_starters()
        # The socket thread gives up the GIL at every send; with the default 5 ms switch
        # interval a busy cell would let it send one message per 5 ms (a GIL convoy), and
        # replies and output would arrive in late clumps.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(switch_interval)
        self._undo.append(lambda: sys.setswitchinterval(interval))
        self.set(Comm, "outbox", outbox)
        self.set(comm, "create_comm", Comm)
        self.set(comm, "get_comm_manager", lambda: comms)
        # Libraries know a Jupyter kernel by ipykernel's shell module (tqdm.autonotebook) and
        # colour their output by its environment; neither needs ipykernel to be installed.
        if SHELL_MODULE not in sys.modules:
            sys.modules[SHELL_MODULE] = shell_module()
            self._undo.append(lambda: sys.modules.pop(SHELL_MODULE, None))
        for name, value in NOTEBOOK_ENVIRON.items():
            self.set_environ(name, value)
        previous_term = signal.signal(
            signal.SIGTERM, lambda *_: _thread.start_new_thread(on_terminate, ())
        )
        self._undo.append(lambda: signal.signal(signal.SIGTERM, previous_term))
        # Figures show inline, as in every Jupyter kernel (matplotlib-inline comes with IPython).
        if "MPLBACKEND" not in os.environ:
            os.environ["MPLBACKEND"] = _INLINE_BACKEND
            self._undo.append(lambda: os.environ.pop("MPLBACKEND", None))
        # matplotlib-inline's `show` and `flush_figures` become cell-aware once it is loaded.
        self._undo.append(shell.events.figures.restore)

    def set_environ(self, name: str, value: str) -> None:
        """Set the environment variable `name` to `value`, to be restored by `restore`."""
        original = os.environ.get(name)
        os.environ[name] = value
        if original is None:
            self._undo.append(lambda: os.environ.pop(name, None))
        else:
            self._undo.append(lambda: os.environ.__setitem__(name, original))

    def wake_loop_on_signals(self) -> None:
        """Make a signal wake the main thread's asyncio loop, whichever thread receives it.

        Python runs signal handlers in the main thread, at its next bytecode. A process-wide
        SIGINT (the kernel manager's interrupt) may be received by another thread while the
        main loop sleeps in `select()`, which nothing then wakes: the handler would wait for
        the next event on the loop. A wakeup fd that the loop watches wakes it. trio sets up
        its own; so does asyncio, but only for `loop.add_signal_handler`.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not in asyncio (trio wakes itself)
            return
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        installed = False
        try:
            previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
            installed = True
            if previous == -1:
                loop.add_reader(reader.fileno(), _drain, reader)
        except (ValueError, NotImplementedError):  # not the main thread; a loop without readers
            previous = None
        if previous != -1:  # something wakes the loop already, or nothing can
            if installed:
                signal.set_wakeup_fd(-1 if previous is None else previous)
            reader.close()
            writer.close()
            return

        def undo() -> None:
            signal.set_wakeup_fd(-1)
            if not loop.is_closed():
                loop.remove_reader(reader.fileno())
            reader.close()
            writer.close()

        self._undo.append(undo)

    def remember_thread_starters(self) -> None:
        """Make `threading.Thread.start` record the starting code's cell on the thread.

        Under `ThreadParentPolicy.starter` the thread's output goes to that cell.
        """
        self.set(threading.Thread, "start", _remembering_start(threading.Thread.start))

    def restore(self) -> None:
        """Undo every change, the last one first."""
        while self._undo:
            self._undo.pop()()


def _drain(reader: socket.socket) -> None:
    """Read the signal numbers the wakeup fd wrote: they only had to wake the loop."""
    try:
        while reader.recv(4096):
            pass
    except OSError:  # drained (BlockingIOError) or closed
        pass


def _remembering_start(original: Callable[[threading.Thread], None]) -> Callable[..., None]:
    """Return a `Thread.start` that records the starting code's cell on the thread first."""

    def start(self: threading.Thread) -> None:
        remember_starter(self)
        original(self)

    return start
