"""The kernel's `time.sleep`: an interrupt ends it, and comm messages are handled inside it.

CPython cannot deliver an asynchronous exception to a thread that sleeps in C, so the kernel's
`time.sleep` waits on an event that an interrupt sets. It is also where a cell of the main
shell or a subshell handles the comm messages of its shell that arrive meanwhile (a *safe
point*, see `requests._comms`), and a cell stopped in the debugger is at one too. An interrupt
that comes while such a handler runs waits until it returns.
"""

from __future__ import annotations

import _thread
import abc
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from async_kernel.requests._frames import runs_user_code
from async_kernel.wire._job import current_job

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import anyio

    from async_kernel.callers._caller import Caller
    from async_kernel.wire._job import Job

__all__ = ("InterruptibleSleep", "Running", "SafePointWork")

_original_sleep = time.sleep
_SLEEP_SLICE = 0.05
"""Seconds the main thread sleeps at a time, so that an interrupt is handled promptly."""


@dataclass(slots=True)
class Running:
    """A request that runs user code and can be interrupted."""

    job: Job
    """The request."""
    thread_id: int
    """The thread it runs in."""
    caller: Caller
    """The caller whose loop runs it."""
    scope: anyio.CancelScope
    """Cancelled to stop it at its next await."""
    wake: threading.Event
    """Set to end an interruptible `time.sleep` in its thread."""
    async_exc_sent: bool = False
    """A `KeyboardInterrupt` was sent to its thread as an asynchronous exception."""
    deferred: int = 0
    """Times its interrupt was sent again later (as SIGINT, in the main thread): it found the
    cell inside the kernel's output code, or running again after it had been found awaiting."""
    interrupt_pending: bool = False
    """`wake` was set to interrupt it (and not by a comm message for its sleep)."""


class SafePointWork(Protocol):
    """The comm messages a thread's cell may handle inside its `time.sleep`."""

    sleeper: threading.Event | None
    """The event to set when such a message arrives (None: nobody sleeps)."""

    def ready(self) -> bool:
        """Whether such a message waits."""
        ...

    def run_at_safe_point(self) -> None:
        """Handle the waiting messages."""
        ...


class InterruptibleSleep(abc.ABC):
    """The sleeping half of the `Interrupter`: its `sleep` is the kernel's `time.sleep`."""

    _lock: threading.Lock
    _running: dict[Job, Running]

    def __init__(self) -> None:
        self._sleeping: set[int] = set()
        self.safe_points: Callable[[], SafePointWork | None] | None = None
        """Returns the comm messages that this thread's cells handle at safe points, if any."""
        self._main_wake = threading.Event()
        # Threads running comm handlers inside a cell's sleep: their interrupt waits for it.
        self._in_safe_point: set[int] = set()
        self._main_interrupt_pending = False
        self._safe_point_job: Job | None = None

    @abc.abstractmethod
    def request(self, jobs: Iterable[Job] | None = None) -> None:
        """Interrupt `jobs` (all running requests when None), from any thread."""

    @abc.abstractmethod
    def interrupt_elsewhere(self, running: Running) -> None:
        """Stop a request that is awaiting, or blocking in a thread other than this one."""

    def sleep(self, seconds: float, /) -> None:
        """The kernel's `time.sleep`: ends early with `KeyboardInterrupt` when interrupted.

        In a cell of the main shell or of a subshell, it handles the comm messages of that
        shell that arrive while it sleeps (a safe point); it still sleeps `seconds` in all.
        """
        if not seconds > 0:  # 0 yields the GIL, a negative (or NaN) raises: as `time.sleep`
            _original_sleep(seconds)
            return
        tid = threading.get_ident()
        main = tid == threading.main_thread().ident
        if tid in self._in_safe_point:  # a comm handler's own sleep, inside a cell's sleep
            self._plain_sleep(seconds, main=main)
            return
        running = None
        if not main:
            with self._lock:
                running = next((r for r in self._running.values() if r.thread_id == tid), None)
        work = None
        if self.safe_points is not None and (running is not None or main):
            work = self.safe_points()
            if work is not None and running is None and not runs_user_code(sys._getframe(1)):  # pyright: ignore[reportPrivateUsage]
                work = None  # the main thread, but not in a cell (the kernel's own sleep)
        if running is not None:
            self._sleep_in_cell(running, seconds, work)
        elif work is not None:
            self._sleep_in_main_cell(seconds, work)
        else:
            self._plain_sleep(seconds, main=main)

    @staticmethod
    def _plain_sleep(seconds: float, *, main: bool) -> None:
        if main and seconds > _SLEEP_SLICE:
            # In slices: a SIGINT landing between the last check for signals and the sleep's
            # system call would otherwise wait for the whole sleep.
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                _original_sleep(min(left, _SLEEP_SLICE))
        else:
            _original_sleep(seconds)

    def run_while_stopped(self, work: SafePointWork) -> None:
        """Handle `work` on this thread while the debugger holds its cell stopped.

        That is a safe point as a cell's sleep is: an interrupt that comes meanwhile waits for
        the handlers, and is then sent again, to land in the cell once it is resumed.
        """
        tid = threading.get_ident()
        job = current_job.get()  # the stopped cell's: debugpy waits in the cell's context
        main = tid == threading.main_thread().ident
        if main:
            self._safe_point_job = job
        self._run_safe_point(tid, work)
        if main:
            if self._main_interrupt_pending:
                self._main_interrupt_pending = False
                if job is not None:
                    self.request([job])
            return
        with self._lock:
            running = self._running.get(job) if job is not None else None
        if running is not None and running.interrupt_pending:
            running.interrupt_pending = False
            running.wake.clear()
            _thread.start_new_thread(self.interrupt_elsewhere, (running,))

    def _run_safe_point(self, tid: int, work: SafePointWork) -> None:
        self._in_safe_point.add(tid)
        try:
            work.run_at_safe_point()
        finally:
            self._in_safe_point.discard(tid)

    def _sleep_in_cell(self, running: Running, seconds: float, work: SafePointWork | None) -> None:
        """Sleep in a cell outside the main thread: an interrupt sets `running.wake`."""
        tid = running.thread_id
        deadline = time.monotonic() + seconds
        # Sleeping for the interrupter from the first to the last moment, handlers included:
        # an interrupt then wakes the sleep instead of raising inside a comm handler.
        self._sleeping.add(tid)
        try:
            while True:
                if work is not None:
                    self._run_safe_point(tid, work)
                if running.interrupt_pending:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                if work is not None:
                    work.sleeper = running.wake
                try:
                    if work is not None and work.ready():
                        continue
                    if running.wake.wait(left):
                        running.wake.clear()
                finally:
                    if work is not None:
                        work.sleeper = None
                if running.interrupt_pending:
                    break
        finally:
            self._sleeping.discard(tid)
        running.interrupt_pending = False
        raise KeyboardInterrupt

    def _sleep_in_main_cell(self, seconds: float, work: SafePointWork) -> None:
        """Sleep in a cell of the main thread, handling its comm messages meanwhile."""
        deadline = time.monotonic() + seconds
        wake = self._main_wake
        self._safe_point_job = current_job.get()
        while True:
            self._run_safe_point(threading.get_ident(), work)
            if self._main_interrupt_pending:
                self._main_interrupt_pending = False
                raise KeyboardInterrupt
            left = deadline - time.monotonic()
            if left <= 0:
                return
            work.sleeper = wake
            try:
                if work.ready():
                    continue
                # In slices, as a plain sleep of the main thread (SIGINT is checked between).
                if wake.wait(min(left, _SLEEP_SLICE)):
                    wake.clear()
            finally:
                work.sleeper = None
