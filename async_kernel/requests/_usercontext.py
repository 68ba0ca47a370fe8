"""Context variables that cells set, carried from one cell to the next as on ipykernel.

Each request runs in a context of its own (a copy made when it was received), so the kernel's
own context variables (the request that output belongs to) never leak from one cell into
another. What user code sets at a cell's top level (`var.set(...)`, `decimal.getcontext()`
changes) is kept per shell and subshell and set again before the next cell:

- Cells of the main line of a shell or subshell (`queue` and `blocking` run modes) see what
  the cells before them set, and keep what they set for the cells after them.
- `task` and `thread` cells, which run at the same time as others, start from what the main
  line set so far; what they set stays theirs, as with `asyncio` tasks and threads.
"""

from __future__ import annotations

import contextvars
import threading
from typing import TYPE_CHECKING, Any

from async_kernel._enums import Channel, RunMode
from async_kernel.wire._job import current_job

if TYPE_CHECKING:
    from async_kernel.wire._job import Job

__all__ = ("KERNEL_CONTEXTVARS", "UserContexts")

KERNEL_CONTEXTVARS: frozenset[contextvars.ContextVar[Any]] = frozenset({current_job})
"""The kernel's own context variables: set for each request, never carried between cells."""

_MAIN_LINE = frozenset({RunMode.queue, RunMode.blocking})
_MISSING = object()


class UserContexts:
    """The context variables that cells set, per shell and subshell."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str | None, dict[contextvars.ContextVar[Any], Any]] = {}

    def enter(self, job: Job) -> contextvars.Context:
        """Set, in the current context, what earlier cells of `job`'s (sub)shell set.

        Returns:
            A snapshot of the context to pass to `leave`.
        """
        with self._lock:
            values = list(self._values.get(job.subshell_id, {}).items())
        for var, value in values:
            var.set(value)
        return contextvars.copy_context()

    def leave(self, job: Job, before: contextvars.Context) -> None:
        """Keep what `job`'s cell set since `enter` (for a main-line cell only)."""
        if job.channel is not Channel.shell or job.run_mode not in _MAIN_LINE:
            return
        changed = {
            var: value
            for var, value in contextvars.copy_context().items()
            if before.get(var, _MISSING) is not value and var not in KERNEL_CONTEXTVARS
        }
        if changed:
            with self._lock:
                self._values.setdefault(job.subshell_id, {}).update(changed)

    def forget(self, subshell_id: str) -> None:
        """Drop what the cells of a deleted subshell set."""
        with self._lock:
            self._values.pop(subshell_id, None)
