"""Interrupting running cells, wherever they run.

* Async code is cancelled at its next await (its request's cancel scope is cancelled).
* Blocking code in the main thread gets `KeyboardInterrupt` from the SIGINT handler.
* Blocking code in other threads (`##thread` cells, subshells) gets `KeyboardInterrupt` as an
  asynchronous exception; the kernel's `time.sleep` in those threads ends early (`_sleep`).
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
from typing import TYPE_CHECKING

from async_kernel.requests._children import signal_descendants
from async_kernel.requests._deferral import in_held_back_code, wait_out_of_held_back_code
from async_kernel.requests._frames import RUN_CODE, runs_user_code
from async_kernel.requests._sleep import InterruptibleSleep, Running, SafePointWork
from async_kernel.wire._job import current_job

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import FrameType

    from async_kernel.wire._job import Job

__all__ = ("Interrupter", "Running", "SafePointWork")

log = logging.getLogger("async_kernel")

_DEFER_AT_MOST = 3
"""Times an interrupt of the main thread is sent again: it found the cell inside the kernel's
output code, or running again after it had been found awaiting."""


def _mark(job: Job) -> None:
    """Mark `job` as interrupted, so that its reply reports the interrupt."""
    if job.execute is not None:
        job.execute.interrupted = True


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in the thread `thread_id` at its next bytecode (None withdraws a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


class Interrupter(InterruptibleSleep):
    """Keeps the running requests and interrupts them on SIGINT or `interrupt_request`.

    The SIGINT handler takes no locks (it runs between two bytecodes of whatever the main
    thread does, which may hold any lock): it reads an immutable snapshot of the running
    requests and drains a deque of requested interrupts, both safe without a lock.
    """

    def __init__(self) -> None:
        super().__init__()
        self._running: dict[Job, Running] = {}
        self._snapshot: tuple[Running, ...] = ()
        self._lock = threading.Lock()
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
        main_in_code = runs_user_code(frame)
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
        if here.deferred < _DEFER_AT_MOST and in_held_back_code(frame, RUN_CODE):
            # Inside the kernel's output code (a `print`): sent again once the cell is out.
            here.deferred += 1
            _thread.start_new_thread(self._send_again, (here,))
            return
        raise KeyboardInterrupt

    def _send_again(self, running: Running) -> None:
        """Interrupt `running` (in the main thread) again once it is out of the output code."""
        self._release_debugged(running.thread_id)
        wait_out_of_held_back_code(running.thread_id, RUN_CODE)
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
            wait_out_of_held_back_code(tid, RUN_CODE)
        # Under the lock, so the request cannot finish in between: once it has, its thread may
        # run the next cell, which must not get this interrupt.
        with self._lock:
            if self._running.get(running.job) is not running:
                return
            in_code = tid != threading.get_ident() and runs_user_code(
                sys._current_frames().get(tid)  # pyright: ignore[reportPrivateUsage]
            )
            main = tid == threading.main_thread().ident
            resend = in_code and main and running.deferred < _DEFER_AT_MOST
            if in_code and not resend:
                if tid in self._sleeping or tid in self._in_safe_point:
                    running.interrupt_pending = True
                    running.wake.set()
                else:
                    running.async_exc_sent = True
                    _set_async_exc(tid, KeyboardInterrupt)
                return
        if resend:
            # The main thread runs the cell again (an awaiting cell was resumed): the SIGINT
            # handler raises it there, where it can tell whether the cell may take it now. An
            # asynchronous exception would land at whatever bytecode comes next: in the loop's
            # code the cell is entering, or in `run_code` between two of the cell's statements.
            running.deferred += 1
            self.request([running.job])
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
