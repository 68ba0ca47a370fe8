"""Interrupts that find a thread inside the kernel's output code wait until it is back out.

A `print` or a `display` in a cell runs the kernel's output path (streams, outbox, session,
socket queue) in the cell's own thread. A `KeyboardInterrupt` raised in there could leave it
half done: text taken from the buffer and never published, the I/O thread never woken. So an
interrupt that lands there is raised in the user's frame that called the output code, at its
next line: after the output went out, where ipykernel's traceback would point too.

* In the main thread (the SIGINT handler runs there) the interrupt is deferred with a trace
  function on the calling frame, which raises it at that frame's next line, return or
  exception.
* Other threads get theirs as an asynchronous exception from the interrupter, which waits
  (briefly) until the thread has left the output code before sending it.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from async_kernel.output import _routing, _stdio, _streams
from async_kernel.wire import _json, _outbox, _session, _sockets

if TYPE_CHECKING:
    from types import CodeType, FrameType

__all__ = ("MainThreadDeferral", "output_caller", "wait_out_of_output")

_OUTPUT_FILES = frozenset(
    module.__file__
    for module in (_routing, _stdio, _streams, _json, _outbox, _session, _sockets)
    if module.__file__ is not None
)
"""The modules of the kernel's output path, which user code enters through print and display."""

_WAIT_STEP = 0.001
"""Seconds between two looks at a thread that is still inside the output code."""
WAIT_AT_MOST = 0.25
"""Seconds the interrupter waits for a thread to leave the output code before it interrupts."""


def output_caller(frame: FrameType | None, stop_at: CodeType) -> FrameType | None:
    """The frame that called into the kernel's output code, if `frame` is inside it.

    Frames are followed outward from `frame` up to the one running `stop_at` (the frame that
    runs the cell); None if no output code is on the way, or if the cell frame itself would
    be the caller.
    """
    caller: FrameType | None = None
    while frame is not None and frame.f_code is not stop_at:
        if frame.f_code.co_filename in _OUTPUT_FILES:
            caller = frame.f_back
        frame = frame.f_back
    if caller is not None and caller.f_code is stop_at:
        return None
    return caller


def wait_out_of_output(thread_id: int, stop_at: CodeType) -> None:
    """Wait (at most `WAIT_AT_MOST` seconds) until thread `thread_id` is out of the output code."""
    deadline = time.monotonic() + WAIT_AT_MOST
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread_id)  # pyright: ignore[reportPrivateUsage]
        if output_caller(frame, stop_at) is None:
            return
        del frame  # a frame of another thread keeps its locals alive
        time.sleep(_WAIT_STEP)


def _no_local_trace(frame: FrameType, event: str, arg: Any) -> None:
    """The global trace function while an interrupt waits in a running frame: trace nothing."""


class MainThreadDeferral:
    """Raises a `KeyboardInterrupt` that landed in the output code at the caller's next line.

    Used by the SIGINT handler only, in the main thread. If the calling frame returns before
    it reaches another line, the interrupt moves to the frame it returns to; when that is the
    frame that runs the cell (the cell's statement was its last, or IPython runs the cell's
    statements one by one), it waits for the cell's next statement to start. It is raised at
    once instead when it cannot be deferred: another trace function (a debugger, coverage) is
    in place, or an interrupt deferred earlier is still waiting (a second interrupt).
    """

    def __init__(self) -> None:
        self._target: FrameType | None = None
        self._cell_file = ""
        self._stop_at: CodeType | None = None
        self._owner: object = None

    @property
    def pending(self) -> bool:
        """Whether an interrupt waits to be raised."""
        return self._stop_at is not None

    def defer(self, frame: FrameType | None, stop_at: CodeType, owner: object) -> bool:
        """Defer the interrupt if `frame` (the interrupted one) is inside the output code.

        Args:
            frame: The frame the signal interrupted.
            stop_at: The code of the frame that runs the cell (IPython's `run_code`).
            owner: The request the interrupt is for, for `cancel`.

        Returns:
            Whether it was deferred; if not, the caller raises it now.
        """
        if self.pending or sys.gettrace() is not None:
            return False
        if threading.current_thread() is not threading.main_thread():
            return False
        caller = output_caller(frame, stop_at)
        if caller is None:
            return False
        self._stop_at, self._owner = stop_at, owner
        self._cell_file = caller.f_code.co_filename
        self._arm(caller)
        sys.settrace(_no_local_trace)  # frames' own trace functions run only while one is set
        return True

    def cancel(self, owner: object) -> None:
        """Drop the interrupt deferred for `owner`, whose cell has ended (from the main thread)."""
        if self.pending and self._owner is owner:
            self._disarm()
            sys.settrace(None)

    def _arm(self, frame: FrameType) -> None:
        self._target = frame
        frame.f_trace = self._trace
        frame.f_trace_lines = True

    def _disarm(self) -> None:
        if self._target is not None:
            self._target.f_trace = None
        self._target = None
        self._stop_at = self._owner = None

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        """The waiting frame's trace function: raise at its next line (or exception)."""
        if event != "return":
            self._disarm()
            sys.settrace(None)
            raise KeyboardInterrupt
        frame.f_trace = None
        back = frame.f_back
        if back is not None and back.f_code is not self._stop_at:
            self._arm(back)
            return None
        # The cell's statement has run to its end: raise when the next one starts.
        self._target = None
        sys.settrace(self._next_statement)
        return None

    def _next_statement(self, frame: FrameType, event: str, arg: Any) -> Any:
        """The global trace function while the interrupt waits for the cell's next statement."""
        if event == "call" and frame.f_code.co_filename == self._cell_file:
            self._target = frame
            return self._trace
        return None
