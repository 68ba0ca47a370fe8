"""Interrupts that find a cell inside the kernel's output code or an event loop's code wait.

A `print` or a `display` in a cell runs the kernel's output path (streams, outbox, session,
socket queue) in the cell's own thread, and an `await` runs some of the event loop's code
there before the cell is suspended. A `KeyboardInterrupt` raised in there could leave it half
done (text taken from the buffer and never published, a cancel scope entered and never left),
and its traceback would end in that code. (A cell stopped at a breakpoint waits inside
debugpy's code: the debugger resumes it first.) So the interrupter waits until the cell is out:

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

from async_kernel.requests._frames import (
    KERNEL_PREFIXES,
    LIBRARY_PREFIXES,
    OUTPUT_FILES,
    debugger_prefixes,
    loop_prefixes,
)

if TYPE_CHECKING:
    from types import CodeType, FrameType

__all__ = ("WAIT_AT_MOST", "in_held_back_code", "wait_out_of_held_back_code")

_WAIT_STEP = 0.001
"""Seconds between two looks at a thread that is still inside the output code."""
WAIT_AT_MOST = 0.25
"""Seconds an interrupt waits for a thread to leave the output code."""


def in_held_back_code(frame: FrameType | None, stop_at: CodeType) -> bool:
    """Whether `frame` is inside the kernel's output code, a loop's or the debugger's.

    A cell stopped at a breakpoint waits inside the debugger: it is resumed first.

    Frames are followed outward from `frame` (the innermost) up to the user's code: the cell,
    or code of the user's own (not the standard library's, an installed package's or the
    kernel's) that it called. The frame running `stop_at` (which runs the cell) ends the look
    too: the loop and the kernel code around the cell do not count. A thread that reaches
    `stop_at`'s frame without passing through the user's code is held back: the cell's code
    is not running at that instant (`run_code` enters or leaves it, or is between two of its
    parts, reading its namespace for the next one).
    """
    loops = loop_prefixes() + debugger_prefixes()
    while frame is not None and frame.f_code is not stop_at:
        name = frame.f_code.co_filename
        if name in OUTPUT_FILES or name.startswith(loops):
            return True
        if not name.startswith(KERNEL_PREFIXES + LIBRARY_PREFIXES):
            return False  # the user's code, blocked in whatever it called
        frame = frame.f_back
    # At `stop_at` with no frame of the cell above it: the cell's code is being entered or
    # left (an awaiting cell resumed or suspended). Raised now, the interrupt would miss it.
    return frame is not None


def wait_out_of_held_back_code(thread_id: int, stop_at: CodeType) -> bool:
    """Wait until thread `thread_id` is out of that code; False if it is still inside.

    Gives up after `WAIT_AT_MOST` seconds.
    """
    deadline = time.monotonic() + WAIT_AT_MOST
    while True:
        frame = sys._current_frames().get(thread_id)  # pyright: ignore[reportPrivateUsage]
        inside = in_held_back_code(frame, stop_at)
        del frame  # a frame of another thread keeps its locals alive
        if not inside:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_WAIT_STEP)
