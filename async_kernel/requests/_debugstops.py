"""Work for a thread that is stopped in the debugger, done on that thread while it waits.

A thread stopped at a breakpoint sits in debugpy's wait loop (pydevd's `do_wait_suspend`),
which runs the commands posted to that thread until the thread is resumed. The kernel posts
its own there: the comm handlers of a shell whose cell is stopped, so that widgets keep
answering while the user looks at the cell's frames. Posted work runs outside the debugger's
tracing (it is not stepped into and its breakpoints do not stop it), and the thread resumes
only after it is done.

Nothing here imports debugpy: without a debugger in the process there is nothing to post to.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("post_to_stopped",)

log = logging.getLogger("async_kernel")

_STATE_SUSPEND = 2
"""pydevd's `STATE_SUSPEND`: the thread is (or is about to be) in the wait loop."""


class _Work:
    """A command in pydevd's queue of one thread: it calls `work` on that thread."""

    __slots__ = ("thread_id", "work")

    def __init__(self, thread_id: str, work: Callable[[], None]) -> None:
        self.thread_id = thread_id
        self.work = work

    def can_be_executed_by(self, thread_id: str) -> bool:
        return thread_id == self.thread_id

    def do_it(self, _debugger: object) -> None:
        try:
            self.work()
        except BaseException:
            log.exception("work for a thread stopped in the debugger failed")


def post_to_stopped(ident: int | None, work: Callable[[], None]) -> bool:
    """Have thread `ident` call `work` if the debugger holds it stopped; whether it will.

    Work posted as the thread is resumed runs the next time the thread stops (so `work`
    must do nothing when there is nothing to do).
    """
    if ident is None or "pydevd" not in sys.modules:
        return False
    constants: Any = sys.modules.get("_pydevd_bundle.pydevd_constants")
    if constants is None:
        return False
    debugger: Any = constants.get_global_debugger()
    if debugger is None:
        return False
    thread = next((t for t in threading.enumerate() if t.ident == ident), None)
    info = getattr(thread, "additional_info", None)
    if thread is None or getattr(info, "pydev_state", None) != _STATE_SUSPEND:
        return False
    thread_id = constants.get_thread_id(thread)
    debugger.post_internal_command(_Work(thread_id, work), thread_id)
    return True
