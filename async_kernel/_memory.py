"""Memory the kernel freed goes back to the system once a burst of requests is over.

The C allocator (glibc's `malloc`) keeps memory that was freed in its arenas for reuse and
gives little of it back. A burst of requests (a notebook run from a client that sends every
cell at once, or thousands of widget messages) can leave a kernel at several times the memory
it needs: measured, 2,000 executes queued at once left 300 MiB resident of which 250 were
free. `MemoryTrim` asks the allocator to return what is free (`malloc_trim`) once at least
`every` requests have finished and then, for `quiet` seconds after the kernel went idle, none
did; where the C library has no `malloc_trim`, it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("MemoryTrim", "malloc_trim")

log = logging.getLogger("async_kernel")


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc
        return None
    function.argtypes = (ctypes.c_size_t,)
    function.restype = ctypes.c_int
    return function


malloc_trim = _find_malloc_trim()
"""glibc's `malloc_trim(pad)` (returns free memory to the system), or None without glibc."""


class MemoryTrim:
    """Trims the allocator once the kernel is quiet after a burst of requests.

    Args:
        schedule: `schedule(delay, fn)` calls `fn()` after `delay` seconds on some thread.
        trim: Returns free memory to the system; `malloc_trim(0)` by default.
        every: Requests that must have finished since the last trim.
        quiet: Seconds without a new request before trimming.
    """

    def __init__(
        self,
        schedule: Callable[[float, Callable[[], None]], object],
        *,
        trim: Callable[[], object] | None = None,
        every: int = 500,
        quiet: float = 1.0,
    ) -> None:
        self._schedule = schedule
        self._trim = trim if trim is not None else _default_trim
        self._every = every
        self._quiet = quiet
        self._lock = threading.Lock()
        self._since_trim = 0
        self._generation = 0
        self._armed = False
        self._idle = True
        self.trims = 0
        """How many times the allocator was trimmed."""

    def finished(self, *, idle: bool) -> None:
        """Count a finished request; `idle` when it was the last one unfinished."""
        with self._lock:
            self._since_trim += 1
            self._generation += 1
            self._idle = idle
            if not idle or self._armed or self._since_trim < self._every:
                return
            self._armed = True
            generation = self._generation
        self._arm(generation)

    def _arm(self, generation: int) -> None:
        self._schedule(self._quiet, lambda: self._trim_if_quiet(generation))

    def _trim_if_quiet(self, generation: int) -> None:
        with self._lock:
            quiet = generation == self._generation
            if quiet:
                self._armed = False
                self._since_trim = 0
            else:
                # Requests finished since. Idle again: wait out a new quiet time from now;
                # busy: the request that leaves the kernel idle arms the next one.
                self._armed = self._idle
            again = self._generation if not quiet and self._idle else None
        if again is not None:
            self._arm(again)
        if not quiet:
            return
        try:
            self._trim()
        except Exception:
            log.exception("could not return free memory to the system")
            return
        self.trims += 1


def _default_trim() -> None:
    if malloc_trim is not None:
        malloc_trim(0)
