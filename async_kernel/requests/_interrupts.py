"""Interrupting running cells, wherever they run.

* Async code is cancelled at its next await (its request's cancel scope is cancelled).
* Blocking code in the main thread gets `KeyboardInterrupt` from the SIGINT handler.
* Blocking code in other threads (`##thread` cells, subshells) gets `KeyboardInterrupt` as an
  asynchronous exception; `time.sleep` in those threads is made interruptible, since CPython
  cannot deliver an asynchronous exception to a thread sleeping in C.

The kernel's `time.sleep` is also where a cell of the main shell or a subshell handles the
comm messages of its shell that arrive meanwhile (a *safe point*, see `requests._comms`); an
interrupt that comes while such a handler runs waits until it returns.
"""

from __future__ import annotations

import _thread
import collections
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from IPython.core.interactiveshell import InteractiveShell

from async_kernel.requests._children import signal_descendants
from async_kernel.requests._deferral import in_held_back_code, wait_out_of_held_back_code
from async_kernel.wire._job import current_job

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import FrameType

    import anyio

    from async_kernel.callers._caller import Caller
    from async_kernel.wire._job import Job

__all__ = ("Interrupter", "Running", "SafePointWork")

log = logging.getLogger("async_kernel")

_RUN_CODE = InteractiveShell.run_code.__code__
_original_sleep = time.sleep
_SLEEP_SLICE = 0.05
"""Seconds the main thread sleeps at a time, so that an interrupt is handled promptly."""
_DEFER_AT_MOST = 3
"""Times an interrupt of the main thread waits for the cell to leave the kernel's output code."""


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
    """Times its interrupt found it inside the kernel's output code and was sent again later."""
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


def _mark(job: Job) -> None:
    """Mark `job` as interrupted, so that its reply reports the interrupt."""
    if job.execute is not None:
        job.execute.interrupted = True


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in the thread `thread_id` at its next bytecode (None withdraws a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


def _runs_user_code(frame: FrameType | None) -> bool:
    """Whether a thread whose innermost frame is `frame` is inside a cell's code right now."""
    while frame is not None:
        if frame.f_code is _RUN_CODE:
            return True
        frame = frame.f_back
    return False


class Interrupter:
    """Keeps the running requests and interrupts them on SIGINT or `interrupt_request`.

    The SIGINT handler takes no locks (it runs between two bytecodes of whatever the main
    thread does, which may hold any lock): it reads an immutable snapshot of the running
    requests and drains a deque of requested interrupts, both safe without a lock.
    """

    def __init__(self) -> None:
        self._running: dict[Job, Running] = {}
        self._snapshot: tuple[Running, ...] = ()
        self._lock = threading.Lock()
        self._sleeping: set[int] = set()
        self.safe_points: Callable[[], SafePointWork | None] | None = None
        """Returns the comm messages that this thread's cells handle at safe points, if any."""
        self._main_wake = threading.Event()
        # Threads running comm handlers inside a cell's sleep: their interrupt waits for it.
        self._in_safe_point: set[int] = set()
        self._main_interrupt_pending = False
        self._safe_point_job: Job | None = None
        # Interrupts requested and not yet handled by the SIGINT handler: None for "all", else
        # the targets. They add up, so a timeout and a user's interrupt close together do not
        # overwrite each other; appends and pops of a deque are atomic.
        self._requests: collections.deque[frozenset[Job] | None] = collections.deque()
        self.release_debugged: Callable[[Iterable[int]], bool] = lambda _: False
        """Resumes the given threads where they are stopped in the debugger (the kernel's
        debugger sets it): an interrupt then lands in the cell, not in debugpy's code."""

    # --- registry -------------------------------------------------------------------------

    def add(self, running: Running) -> None:
        """Record a request that starts running user code."""
        with self._lock:
            self._running[running.job] = running
            self._snapshot = tuple(self._running.values())

    def remove(self, job: Job) -> None:
        """Forget a request that has finished (call it from the request's own thread).

        An interrupt sent to this thread as an asynchronous exception that has not been
        raised yet is withdrawn: it was meant for the cell, which is over.
        """
        with self._lock:
            running = self._running.pop(job, None)
            self._snapshot = tuple(self._running.values())
            if running is not None and running.async_exc_sent:
                _set_async_exc(running.thread_id, None)

    def running(self) -> tuple[Running, ...]:
        """Return the requests that run now."""
        return self._snapshot

    def sole_job(self) -> Job | None:
        """The request that runs now if it is the only one (the writer of fd-level output)."""
        snapshot = self._snapshot
        return snapshot[0].job if len(snapshot) == 1 else None

    # --- entry points ----------------------------------------------------------------------

    def request(self, jobs: Iterable[Job] | None = None) -> None:
        """Interrupt `jobs` (all running requests when None), from any thread.

        The main thread is reached with SIGINT so that blocking code there is interrupted;
        the process group gets it too, so child processes started by a cell stop as well. A
        kernel that does not lead its group (its launcher does) signals its descendants in
        the group instead of the group: the same processes, without the launcher.
        """
        targets = frozenset(jobs) if jobs is not None else None
        self._requests.append(targets)
        # Marked before the signal: a cell whose blocking call the signal ends (its child
        # process dies of it) may finish before the handler runs in the main thread.
        for running in self._snapshot:
            if targets is None or running.job in targets:
                _mark(running.job)
        main = threading.main_thread().ident
        if main is None:
            return
        if jobs is None and os.name == "posix" and os.getpgid(0) == os.getpid():
            os.killpg(os.getpgid(0), signal.SIGINT)
            return
        if jobs is None and os.name == "posix":
            signal_descendants(signal.SIGINT)
        signal.pthread_kill(main, signal.SIGINT)

    def on_sigint(self, signum: int, frame: FrameType | None) -> None:
        """The SIGINT handler: interrupt what was asked for (everything, for a plain SIGINT)."""
        # Only targeted requests (timeouts) are pending: interrupt those. Any other SIGINT
        # (the kernel manager's, or `request()` for all) interrupts every running request.
        targets: set[Job] | None = set()
        while True:
            try:
                requested = self._requests.popleft()
            except IndexError:
                break
            if requested is None or targets is None:
                targets = None
            else:
                targets |= requested
        if not targets:
            targets = None
        main_in_code = _runs_user_code(frame)
        current = current_job.get()
        if threading.get_ident() in self._in_safe_point:
            # A comm handler runs in its own context: the cell is the one whose sleep runs it.
            current = self._safe_point_job
        here: Running | None = None
        elsewhere: list[Running] = []
        awaiting: list[Running] = []
        for running in self._snapshot:
            if targets is not None and running.job not in targets:
                continue
            # Marked now, not when the offloaded call runs: a cell whose blocking call ends
            # because of this very signal (its child process died of it) may finish first.
            _mark(running.job)
            if running.thread_id != threading.get_ident() or not main_in_code:
                elsewhere.append(running)
            elif current is None or running.job is current:
                here = here or running
            else:  # a cell of this thread's loop that awaits while another one runs here
                awaiting.append(running)
        if elsewhere or awaiting:
            # From a new thread: cancelling wakes this thread's loop, which a signal handler
            # running inside the loop's own select() could not do, and starting a raw thread
            # takes none of the locks the interrupted code may hold.
            _thread.start_new_thread(self._interrupt_all, (elsewhere, awaiting))
        if here is None:
            return
        if threading.get_ident() in self._in_safe_point:
            # A comm handler runs inside the cell's time.sleep: the cell gets the interrupt
            # once it returns (the handler's own request would otherwise swallow it).
            self._main_interrupt_pending = True
            return
        if here.deferred < _DEFER_AT_MOST and in_held_back_code(frame, _RUN_CODE):
            # Inside the kernel's output code (a `print`): sent again once the cell is out.
            here.deferred += 1
            _thread.start_new_thread(self._send_again, (here,))
            return
        raise KeyboardInterrupt

    def _send_again(self, running: Running) -> None:
        """Interrupt `running` (in the main thread) again once it is out of the output code."""
        self._release_debugged(running.thread_id)
        wait_out_of_held_back_code(running.thread_id, _RUN_CODE)
        with self._lock:
            if self._running.get(running.job) is not running:
                return
        self.request([running.job])

    def _interrupt_all(self, elsewhere: list[Running], awaiting: list[Running]) -> None:
        for running in elsewhere:
            try:
                self.interrupt_elsewhere(running)
            except Exception:
                log.exception("could not interrupt %r", running.job)
        for running in awaiting:
            self._cancel(running)

    def interrupt_elsewhere(self, running: Running) -> None:
        """Stop a request that is awaiting, or blocking in a thread other than this one."""
        _mark(running.job)
        tid = running.thread_id
        if tid != threading.get_ident():
            # Not inside the kernel's output code, which it would leave half done.
            self._release_debugged(tid)
            wait_out_of_held_back_code(tid, _RUN_CODE)
        # Under the lock, so the request cannot finish in between: once it has, its thread may
        # run the next cell, which must not get this interrupt.
        with self._lock:
            if self._running.get(running.job) is not running:
                return
            if tid != threading.get_ident() and _runs_user_code(sys._current_frames().get(tid)):  # pyright: ignore[reportPrivateUsage]
                if tid in self._sleeping or tid in self._in_safe_point:
                    running.interrupt_pending = True
                    running.wake.set()
                else:
                    running.async_exc_sent = True
                    _set_async_exc(tid, KeyboardInterrupt)
                return
        self._cancel(running)

    def _release_debugged(self, thread_id: int) -> None:
        try:
            self.release_debugged((thread_id,))
        except Exception:
            log.exception("could not resume thread %s in the debugger", thread_id)

    def _cancel(self, running: Running) -> None:
        """Cancel `running` at its next await."""
        try:
            running.caller.call_direct(running.scope.cancel)
        except Exception:
            log.exception("could not cancel %r", running.job)

    # --- interruptible sleep ---------------------------------------------------------------

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
            if work is not None and running is None and not _runs_user_code(sys._getframe(1)):  # pyright: ignore[reportPrivateUsage]
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
