"""The interrupter in-process: a SIGINT handler that takes no locks and loses no request."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

import pytest

from async_kernel._enums import Channel
from async_kernel.output import _streams
from async_kernel.requests import _frames as frames
from async_kernel.requests import _interrupts as interrupts
from async_kernel.requests._deferral import in_held_back_code, wait_out_of_held_back_code
from async_kernel.requests._interrupts import Interrupter, Running
from async_kernel.wire._job import ExecuteState, Job, current_job
from async_kernel.wire._session import Message

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import FrameType

TIMEOUT = 10.0


def make_job() -> Job:
    job = Job(Message({"msg_type": "execute_request"}, {}, {}, {}), Channel.shell)
    job.execute = ExecuteState(1)
    return job


def running_elsewhere(job: Job) -> Running:
    """A request registered as running in another thread (a `##thread` cell, say)."""
    return Running(job, -1, None, None, threading.Event())  # pyright: ignore[reportArgumentType]


class Recorder(Interrupter):
    """Records what the handler hands to other threads instead of interrupting them."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: list[Job] = []
        self.done = threading.Event()

    def _interrupt_all(self, elsewhere: list[Running], awaiting: list[Running]) -> None:
        self.handed += [r.job for r in (*elsewhere, *awaiting)]
        self.done.set()


def test_the_handler_runs_while_the_registry_lock_is_held() -> None:
    """A SIGINT can land while the main thread is inside `add` or `remove`: no deadlock."""
    interrupter = Recorder()
    job = make_job()
    interrupter.add(running_elsewhere(job))
    finished = threading.Event()

    def handle_under_the_lock() -> None:
        with interrupter._lock:  # pyright: ignore[reportPrivateUsage]
            interrupter.on_sigint(signal.SIGINT, None)
        finished.set()

    thread = threading.Thread(target=handle_under_the_lock, daemon=True)
    thread.start()
    assert finished.wait(TIMEOUT), "the SIGINT handler blocked on the interrupter's lock"
    assert interrupter.done.wait(TIMEOUT)
    assert interrupter.handed == [job]
    assert job.execute is not None
    assert job.execute.interrupted


def test_requests_from_many_threads_are_neither_lost_nor_resurrected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Targeted requests made at once from 8 threads all reach the next handler, and only it."""
    monkeypatch.setattr(signal, "pthread_kill", lambda *args: None)  # the handler is called here
    interrupter = Recorder()
    jobs = [make_job() for _ in range(8)]
    for job in jobs:
        interrupter.add(running_elsewhere(job))
    extra = make_job()
    interrupter.add(running_elsewhere(extra))  # never asked for: must not be interrupted
    barrier = threading.Barrier(len(jobs))

    def ask(job: Job) -> None:
        barrier.wait(TIMEOUT)
        interrupter.request([job])

    threads = [threading.Thread(target=ask, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    interrupter.on_sigint(signal.SIGINT, None)
    assert interrupter.done.wait(TIMEOUT)
    assert set(interrupter.handed) == set(jobs)
    # A second SIGINT with nothing requested is the user's: it interrupts everything.
    interrupter.done.clear()
    interrupter.handed.clear()
    interrupter.on_sigint(signal.SIGINT, None)
    assert interrupter.done.wait(TIMEOUT)
    assert set(interrupter.handed) == {*jobs, extra}


def test_a_request_made_while_the_handler_drains_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signal, "pthread_kill", lambda *args: None)
    interrupter = Recorder()
    first, second = make_job(), make_job()
    for job in (first, second):
        interrupter.add(running_elsewhere(job))
    interrupter.request([first])
    interrupter.on_sigint(signal.SIGINT, None)
    assert interrupter.done.wait(TIMEOUT)
    assert interrupter.handed == [first]
    interrupter.done.clear()
    interrupter.handed.clear()
    interrupter.request([second])
    interrupter.on_sigint(signal.SIGINT, None)
    assert interrupter.done.wait(TIMEOUT)
    assert interrupter.handed == [second]


def test_sole_job_is_the_only_running_request() -> None:
    interrupter = Interrupter()
    assert interrupter.sole_job() is None
    a, b = make_job(), make_job()
    interrupter.add(running_elsewhere(a))
    assert interrupter.sole_job() is a
    interrupter.add(running_elsewhere(b))
    assert interrupter.sole_job() is None
    interrupter.remove(a)
    assert interrupter.sole_job() is b
    assert [r.job for r in interrupter.running()] == [b]


def test_interrupt_and_timeout_are_reported_in_one_place() -> None:
    state: Any = ExecuteState(3)
    assert state.interrupt_error()["ename"] == "KeyboardInterrupt"
    state.timeout = 1.5
    error = state.interrupt_error()
    assert error["ename"] == "TimeoutError"
    assert "1.5 s" in error["evalue"]
    state.interrupted = True
    shown = state.shown_error({"ename": "CancelledError", "evalue": "", "traceback": []})
    assert shown["ename"] == "TimeoutError"


# --- interrupts that land in the kernel's output code ----------------------------------------


def defined_in(filename: str, source: str) -> dict[str, Any]:
    """Run `source` as if it were the file `filename`; return its namespace."""
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), namespace)
    return namespace


# Functions that live, as far as frames tell, in the kernel's output code and in asyncio.
_OUTPUT = defined_in(
    _streams.__file__,
    "import sys\n"
    "def publish(then):\n    return then(sys._getframe())\n"
    "def hold(inside, leave):\n    inside.set()\n    leave.wait(30)\n",
)
_LOOP = defined_in(
    os.path.join(os.path.dirname(asyncio.__file__), "tasks.py"),
    "import sys\ndef sleep(then):\n    return then(sys._getframe())\n",
)

_LIBRARY = defined_in(
    os.path.join(os.path.dirname(inspect.__file__), "library.py"),
    "import sys\ndef evaluate(then):\n    return then(sys._getframe())\n",
)
"""A function that lives in the standard library (as IPython's own code lives in a library)."""


def run_cell(body: Callable[[], object]) -> object:
    """Stands in for IPython's `run_code` (the frame that runs a cell)."""
    return body()


class Resent:
    """Counts the SIGINTs the interrupter sends again (instead of sending them)."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = threading.Condition()

    def __call__(self, *args: object) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait_for(self, count: int) -> bool:
        """Wait until `count` were sent; False after `TIMEOUT` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: self.count >= count, TIMEOUT)


@pytest.fixture
def main_cell(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Interrupter, Running, Resent]]:
    """An interrupter with one cell running in this thread, and a record of re-sent SIGINTs.

    Each test waits for the re-sends it causes, so none comes after the fixture is undone.
    """
    sent = Resent()
    monkeypatch.setattr(signal, "pthread_kill", sent)
    monkeypatch.setattr(interrupts, "RUN_CODE", run_cell.__code__)
    monkeypatch.setattr(frames, "RUN_CODE", run_cell.__code__)
    interrupter = Interrupter()
    job = make_job()
    running = Running(job, threading.get_ident(), None, None, threading.Event())  # pyright: ignore[reportArgumentType]
    interrupter.add(running)
    token = current_job.set(job)
    yield interrupter, running, sent
    current_job.reset(token)
    interrupter.remove(job)


def test_held_back_code_is_the_output_path_and_the_loops_between_the_frame_and_the_cell() -> None:
    stop = run_cell.__code__

    def held(frame: FrameType | None) -> bool:
        return in_held_back_code(frame, stop)

    publish, sleep = _OUTPUT["publish"], _LOOP["sleep"]
    assert run_cell(lambda: publish(held)) is True
    assert run_cell(lambda: sleep(held)) is True
    assert run_cell(lambda: held(inspect.currentframe())) is False
    # The frame that runs the cell, between the cell's steps (an await resumed or suspended).
    assert run_cell(lambda: held(caller_frame())) is True
    # Library code the frame that runs the cell calls before the cell's code starts (IPython
    # reading the namespace for the cell's last statement): no line of the cell runs yet.
    assert run_cell(functools.partial(_LIBRARY["evaluate"], held)) is True
    # Output code around the cell (the kernel's own, outside it) does not count.
    assert publish(lambda _: run_cell(lambda: held(inspect.currentframe()))) is False
    # Nor does output code that called back into the user's code, which blocks there.
    assert run_cell(lambda: publish(lambda _: held(inspect.currentframe()))) is False


def test_an_interrupt_in_the_output_code_is_sent_again_once_the_cell_is_out(
    main_cell: tuple[Interrupter, Running, Resent],
) -> None:
    interrupter, running, sent = main_cell

    def handle(frame: FrameType | None) -> None:
        interrupter.on_sigint(signal.SIGINT, frame)  # raises nothing here

    run_cell(lambda: _OUTPUT["publish"](handle))
    assert running.deferred == 1
    assert sent.wait_for(1), "the interrupt was not sent again"
    assert list(interrupter._requests) == [frozenset({running.job})]  # pyright: ignore[reportPrivateUsage]
    # Out of the output code, it is raised at once.
    with pytest.raises(KeyboardInterrupt):
        run_cell(lambda: interrupter.on_sigint(signal.SIGINT, inspect.currentframe()))


def caller_frame() -> FrameType | None:
    """The frame that called the caller of this function."""
    frame = inspect.currentframe()
    return frame.f_back.f_back if frame is not None and frame.f_back is not None else None


def test_an_interrupt_between_an_awaiting_cells_steps_is_sent_again(
    main_cell: tuple[Interrupter, Running, Resent],
) -> None:
    """A SIGINT that finds IPython's `run_code` itself innermost does not raise there.

    That is where the main thread is while it resumes or suspends an awaiting cell; raised
    there, the interrupt would end the cell with a traceback that has no frame of it.
    """
    interrupter, running, sent = main_cell
    run_cell(lambda: interrupter.on_sigint(signal.SIGINT, caller_frame()))
    assert running.deferred == 1
    assert sent.wait_for(1), "the interrupt was not sent again"


def test_a_cell_that_never_leaves_the_output_code_is_interrupted_anyway(
    main_cell: tuple[Interrupter, Running, Resent],
) -> None:
    interrupter, running, sent = main_cell

    def handle(frame: FrameType | None) -> None:
        interrupter.on_sigint(signal.SIGINT, frame)

    for _ in range(interrupts._DEFER_AT_MOST):  # pyright: ignore[reportPrivateUsage]
        run_cell(lambda: _OUTPUT["publish"](handle))
    with pytest.raises(KeyboardInterrupt):
        run_cell(lambda: _OUTPUT["publish"](handle))
    assert running.deferred == interrupts._DEFER_AT_MOST  # pyright: ignore[reportPrivateUsage]
    assert sent.wait_for(interrupts._DEFER_AT_MOST)  # pyright: ignore[reportPrivateUsage]


def test_the_interrupter_waits_for_a_thread_to_leave_the_output_code() -> None:
    stop = run_cell.__code__
    inside, leave = threading.Event(), threading.Event()

    def cell() -> None:
        _OUTPUT["hold"](inside, leave)
        leave.wait(TIMEOUT)  # out of the output code, still in the cell

    thread = threading.Thread(target=run_cell, args=(cell,))
    thread.start()
    assert inside.wait(TIMEOUT)
    assert thread.ident is not None
    assert wait_out_of_held_back_code(thread.ident, stop) is False  # gave up after WAIT_AT_MOST
    leave.set()
    assert wait_out_of_held_back_code(thread.ident, stop) is True
    thread.join(TIMEOUT)


def interrupt_from_another_thread(interrupter: Interrupter, running: Running) -> threading.Event:
    """Call `interrupt_elsewhere(running)` as the handler's helper thread does; set when done."""
    finished = threading.Event()

    def helper() -> None:
        interrupter.interrupt_elsewhere(running)
        finished.set()

    threading.Thread(target=helper, daemon=True).start()
    return finished


def test_a_main_thread_cell_found_running_again_gets_sigint_not_an_async_exception(
    main_cell: tuple[Interrupter, Running, Resent],
) -> None:
    """The handler found the main thread awaiting; by the time the helper looks, it runs again.

    An asynchronous exception would be raised at the main thread's next bytecode, wherever that
    is (the event loop's code the cell is entering, `run_code` between two statements); SIGINT
    goes through the handler, which raises it only where the cell can take it.
    """
    interrupter, running, sent = main_cell

    def cell() -> None:
        finished = interrupt_from_another_thread(interrupter, running)
        assert sent.wait_for(1), "the interrupt was not sent again as SIGINT"
        assert finished.wait(TIMEOUT)

    try:
        run_cell(cell)
    except KeyboardInterrupt:
        pytest.fail("the main thread got an asynchronous KeyboardInterrupt")
    assert not running.async_exc_sent
    assert running.deferred == 1
    assert list(interrupter._requests) == [frozenset({running.job})]  # pyright: ignore[reportPrivateUsage]


def test_a_main_thread_cell_that_keeps_running_gets_an_async_exception_in_the_end(
    main_cell: tuple[Interrupter, Running, Resent],
) -> None:
    """Once the interrupt was sent again as often as it may be, the helper raises it itself."""
    interrupter, running, sent = main_cell
    running.deferred = interrupts._DEFER_AT_MOST  # pyright: ignore[reportPrivateUsage]

    def cell() -> None:
        finished = interrupt_from_another_thread(interrupter, running)
        assert finished.wait(TIMEOUT)
        for _ in range(1000):  # the asynchronous exception lands at one of these bytecodes
            pass

    with pytest.raises(KeyboardInterrupt):
        run_cell(cell)
    assert running.async_exc_sent
    assert sent.count == 0
