"""The watch on the process that launched the kernel: the kernel ends when its launcher does."""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("watch_parent",)

log = logging.getLogger("async_kernel")


def watch_parent(on_gone: Callable[[], object], *, interval: float = 1.0) -> threading.Thread:
    """Call `on_gone` (once, from a daemon thread) when the launching process is gone.

    Gone means the parent changed, or the launcher that jupyter_client names in
    `JPY_PARENT_PID` no longer exists: it can die before the watch begins, when the kernel
    already has a new parent. A thread of its own, so that the watch goes on while every
    event loop is busy.
    """
    parent = os.getppid()
    named = os.environ.get("JPY_PARENT_PID", "")
    launcher = int(named) if named.isdigit() and int(named) not in (0, 1, parent) else None
    done = threading.Event()

    def watch() -> None:
        while not done.wait(interval):
            if os.getppid() != parent or (launcher is not None and not _pid_exists(launcher)):
                log.warning("the parent process %s is gone: stopping", launcher or parent)
                on_gone()
                return

    thread = threading.Thread(target=watch, name="async_kernel_parent_watch", daemon=True)
    thread.start()
    return thread


def _pid_exists(pid: int) -> bool:
    """Whether a process `pid` exists (assumed on Windows, where signal 0 is not a probe)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to someone else
        return True
    return True
