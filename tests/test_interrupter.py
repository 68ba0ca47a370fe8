"""The interrupter in-process: a SIGINT handler that takes no locks and loses no request."""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest

from async_kernel._enums import Channel
from async_kernel.requests._interrupts import Interrupter, Running
from async_kernel.wire._job import ExecuteState, Job
from async_kernel.wire._session import Message

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
