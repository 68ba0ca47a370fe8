"""The watch on the process that launched the kernel: the kernel ends when its launcher does.

When the launcher is gone, the kernel first stops as for a `shutdown_request` (running cells
are interrupted, the output is sent); if the process still runs `EXIT_AFTER` seconds later
(code that ignores interrupts, a stop that hangs), the watch ends it. Nobody is left to
restart or shut down an orphan, so it must not spin on whatever its cells are doing.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from async_kernel._threads import hide_from_debugger

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("EXIT_AFTER", "ORPHAN_EXIT_CODE", "ParentWatch")

log = logging.getLogger("async_kernel")

EXIT_AFTER = 3.0
"""Seconds from noticing the launcher's death to ending the process if it has not ended."""
ORPHAN_EXIT_CODE = 1
"""The exit code when the watch has to end the process (ipykernel's for an orphan, too)."""


class ParentWatch:
    """Calls `on_gone` (once, from a daemon thread) when the launching process is gone.

    Gone means the parent changed, or the launcher that jupyter_client names in
    `JPY_PARENT_PID` no longer exists: it can die before the watch begins, when the kernel
    already has a new parent. A thread of its own, so that the watch goes on while every
    event loop is busy; `exit_after` seconds after `on_gone`, it ends the process unless
    `stop()` was called (the kernel stopped in time, and an embedding process goes on).

    Args:
        on_gone: Starts the kernel's clean shutdown (it must not block).
        interval: Seconds between two looks at the launcher.
        exit_after: Seconds the clean shutdown may take.
    """

    def __init__(
        self,
        on_gone: Callable[[], object],
        *,
        interval: float = 0.5,
        exit_after: float = EXIT_AFTER,
    ) -> None:
        self._on_gone = on_gone
        self._interval = interval
        self._exit_after = exit_after
        self._parent = os.getppid()
        named = os.environ.get("JPY_PARENT_PID", "")
        self._launcher = (
            int(named) if named.isdigit() and int(named) not in (0, 1, self._parent) else None
        )
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="async_kernel_parent_watch", daemon=True
        )
        hide_from_debugger(self._thread)

    def start(self) -> ParentWatch:
        """Start watching; return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (the kernel has stopped): the process is never ended by the watch."""
        self._done.set()

    def launcher_gone(self) -> bool:
        """Whether the launching process is gone."""
        if os.getppid() != self._parent:
            return True
        return self._launcher is not None and not _pid_exists(self._launcher)

    def _watch(self) -> None:
        while not self._done.wait(self._interval):
            if self.launcher_gone():
                break
        else:
            return
        log.warning("the parent process %s is gone: stopping", self._launcher or self._parent)
        try:
            self._on_gone()
        except Exception:
            log.exception("stopping after the parent's death failed")
        if self._done.wait(self._exit_after):
            return
        log.warning(
            "the kernel did not stop within %s s of its parent's death: exiting", self._exit_after
        )
        os._exit(ORPHAN_EXIT_CODE)


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
