"""Interrupts that find a thread inside the kernel's output code wait until it is back out.

A `print` or a `display` in a cell runs the kernel's output path (streams, outbox, session,
socket queue) in the cell's own thread. A `KeyboardInterrupt` raised in there could leave it
half done (text taken from the buffer and never published), and its traceback would end in
the kernel's code. So the interrupter waits until the thread has left that code:

* in the main thread, the SIGINT handler that finds the cell inside the output code raises
  nothing; a helper thread waits until the cell is out of it and sends SIGINT again;
* other threads get their `KeyboardInterrupt` as an asynchronous exception, sent once they are
  out of it.

The wait is bounded (`WAIT_AT_MOST`): a cell that prints without pause is interrupted anyway.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from async_kernel.output import _routing, _stdio, _streams
from async_kernel.wire import _json, _outbox, _session, _sockets

if TYPE_CHECKING:
    from types import CodeType, FrameType

__all__ = ("WAIT_AT_MOST", "in_output_code", "wait_out_of_output")

_OUTPUT_FILES = frozenset(
    module.__file__
    for module in (_routing, _stdio, _streams, _json, _outbox, _session, _sockets)
    if module.__file__ is not None
)
"""The modules of the kernel's output path, which user code enters through print and display."""

_WAIT_STEP = 0.001
"""Seconds between two looks at a thread that is still inside the output code."""
WAIT_AT_MOST = 0.25
"""Seconds an interrupt waits for a thread to leave the output code."""


def in_output_code(frame: FrameType | None, stop_at: CodeType) -> bool:
    """Whether `frame` is inside the kernel's output code, called by the cell.

    Frames are followed outward from `frame` up to the one running `stop_at` (the frame that
    runs the cell).
    """
    while frame is not None and frame.f_code is not stop_at:
        if frame.f_code.co_filename in _OUTPUT_FILES:
            return True
        frame = frame.f_back
    return False


def wait_out_of_output(thread_id: int, stop_at: CodeType) -> bool:
    """Wait until thread `thread_id` is out of the output code; False if it is still inside.

    Gives up after `WAIT_AT_MOST` seconds.
    """
    deadline = time.monotonic() + WAIT_AT_MOST
    while True:
        frame = sys._current_frames().get(thread_id)  # pyright: ignore[reportPrivateUsage]
        inside = in_output_code(frame, stop_at)
        del frame  # a frame of another thread keeps its locals alive
        if not inside:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_WAIT_STEP)
