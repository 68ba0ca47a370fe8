"""Marks on the kernel's own threads, so that a debugger leaves them alone.

debugpy (pydevd) skips threads with the attribute `pydev_do_not_trace` (never traced, never
suspended by a pause or a breakpoint elsewhere) and leaves threads with `is_pydev_daemon_thread`
out of its thread list (and, once it runs, out of `threading.enumerate()`). The kernel's socket,
control, output and watcher threads run no user code: a debugger that stopped one of them
would stop the kernel itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import threading

__all__ = ("hide_from_debugger", "is_hidden_from_debugger")


def hide_from_debugger(thread: threading.Thread | None) -> None:
    """Mark `thread` as one of the kernel's (call it before the debugger starts, or at once)."""
    if thread is None:
        return
    thread.pydev_do_not_trace = True  # pyright: ignore[reportAttributeAccessIssue]
    thread.is_pydev_daemon_thread = True  # pyright: ignore[reportAttributeAccessIssue]


def is_hidden_from_debugger(thread: threading.Thread) -> bool:
    """Whether `thread` is marked as one of the kernel's."""
    return bool(getattr(thread, "is_pydev_daemon_thread", False))
