"""Tests for `async_kernel.callers._pending`: completion, cancellation, callbacks and waiting."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

import async_kernel.callers._pending
from async_kernel.callers._pending import Pending, PendingCancelled


def _wait_for(condition: Any, timeout: float = 5.0) -> None:
    """Spin (yielding the GIL) until `condition()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0)


def _waiters(pending: Pending[Any]) -> int:
    event = pending._event  # pyright: ignore[reportPrivateUsage]
    return 0 if event is None else event.waiting


def test_all_is_declared() -> None:
    assert set(async_kernel.callers._pending.__all__) == {"Pending", "PendingCancelled"}


def test_set_result() -> None:
    pending: Pending[int] = Pending()
    assert not pending.done()
    assert pending.set_result(1)
    assert pending.done()
    assert not pending.cancelled()
    assert pending.result() == 1
    assert pending.exception() is None
    # First completion wins.
    assert not pending.set_result(2)
    assert not pending.set_exception(ValueError())
    assert not pending.set_cancelled()
    assert not pending.cancel()
    assert pending.result(timeout=0) == 1


def test_set_exception() -> None:
    pending: Pending[int] = Pending()
    error = ValueError("boom")
    assert pending.set_exception(error)
    assert pending.exception() is error
    with pytest.raises(ValueError, match="boom"):
        pending.result()


def test_cancel_before_start() -> None:
    pending: Pending[int] = Pending()
    assert pending.cancel("not wanted")
    assert pending.cancelled()
    assert pending.done()
    assert not pending.set_canceller(None), "a runner must skip a cancelled call"
    assert not pending.set_result(1)
    with pytest.raises(PendingCancelled, match="not wanted"):
        pending.result()
    with pytest.raises(PendingCancelled):
        pending.exception()
    assert not pending.cancel()


def test_cancel_running_calls_the_canceller() -> None:
    pending: Pending[int] = Pending()
    calls: list[str] = []
    assert pending.set_canceller(lambda: calls.append("cancel"))
    assert pending.cancel("stop")
    # The runner decides when the work has stopped.
    assert calls == ["cancel"]
    assert pending.cancel_requested
    assert not pending.done()
    assert pending.set_cancelled()
    with pytest.raises(PendingCancelled, match="stop"):
        pending.result()


def test_callbacks_before_and_after_done() -> None:
    pending: Pending[int] = Pending()
    seen: list[tuple[str, Pending[int]]] = []
    pending.add_done_callback(lambda p: seen.append(("early", p)))
    removed = seen.append  # a callback that is added and removed is never called
    pending.add_done_callback(removed)  # pyright: ignore[reportArgumentType]
    assert pending.remove_done_callback(removed) == 1  # pyright: ignore[reportArgumentType]
    assert seen == []
    pending.set_result(3)
    assert seen == [("early", pending)]
    pending.add_done_callback(lambda p: seen.append(("late", p)))
    assert seen == [("early", pending), ("late", pending)]


def test_callback_runs_in_completing_thread() -> None:
    pending: Pending[int] = Pending()
    threads: list[str] = []
    pending.add_done_callback(lambda _: threads.append(threading.current_thread().name))
    worker = threading.Thread(target=pending.set_result, args=(1,), name="completer")
    worker.start()
    worker.join(5)
    assert threads == ["completer"]


def test_failing_callback_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    pending: Pending[int] = Pending()
    seen: list[int] = []

    def bad(_: Pending[int]) -> None:
        raise RuntimeError("callback failed")

    pending.add_done_callback(bad)
    pending.add_done_callback(lambda p: seen.append(p.result()))
    with caplog.at_level(logging.ERROR, logger="async_kernel.callers._pending"):
        assert pending.set_result(5)
    assert seen == [5], "later callbacks still run"
    assert "callback failed" in caplog.text


def test_result_timeout() -> None:
    pending: Pending[int] = Pending()
    with pytest.raises(TimeoutError):
        pending.result(timeout=0.01)
    assert not pending.wait(timeout=0.01)


def test_result_from_thread_while_completed_in_another() -> None:
    pending: Pending[str] = Pending()
    results: list[str] = []
    waiters = [
        threading.Thread(target=lambda: results.append(pending.result(timeout=5))) for _ in range(3)
    ]
    for waiter in waiters:
        waiter.start()
    _wait_for(lambda: _waiters(pending) == 3)
    completer = threading.Thread(target=pending.set_result, args=("done",))
    completer.start()
    for thread in (*waiters, completer):
        thread.join(5)
    assert results == ["done"] * 3


def test_result_on_the_callers_own_thread_raises() -> None:
    caller: Any = SimpleNamespace(ident=threading.get_ident(), name="me")
    pending: Pending[int] = Pending(caller=caller)
    with pytest.raises(RuntimeError, match="deadlock"):
        pending.result(timeout=1)
    with pytest.raises(TimeoutError):
        pending.result(timeout=0)  # polling cannot deadlock
    pending.set_result(1)
    assert pending.result() == 1, "a done pending may be read anywhere"


def test_creation_is_cheap() -> None:
    pending: Pending[int] = Pending()
    assert not hasattr(pending, "__dict__")
    pending.set_result(1)
    pending.result()
    assert pending._event is None, "no event is needed when nobody had to wait"  # pyright: ignore[reportPrivateUsage]


def test_repr() -> None:
    def compute() -> None: ...

    caller: Any = SimpleNamespace(ident=None, name="worker")
    pending: Pending[None] = Pending(compute, caller)
    assert repr(pending) == "<Pending test_repr.<locals>.compute pending caller=worker>"
    pending.cancel()
    assert "cancelled" in repr(pending)


@pytest.mark.anyio
async def test_await_completed_from_a_thread() -> None:
    pending: Pending[int] = Pending()
    results: list[int] = []

    async def waiter() -> None:
        results.append(await pending)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            assert _waiters(pending) == 1
            thread = threading.Thread(target=pending.set_result, args=(7,))
            thread.start()
        thread.join(5)
    assert results == [7]


@pytest.mark.anyio
async def test_await_done_exception_and_cancelled() -> None:
    with anyio.fail_after(5):
        done: Pending[int] = Pending()
        done.set_result(1)
        assert await done == 1
        failed: Pending[int] = Pending()
        failed.set_exception(KeyError("k"))
        with pytest.raises(KeyError):
            await failed
        cancelled: Pending[int] = Pending()
        cancelled.cancel("gone")
        with pytest.raises(PendingCancelled, match="gone"):
            await cancelled


@pytest.mark.anyio
async def test_cancelling_the_awaiter_leaves_the_pending_alone() -> None:
    pending: Pending[int] = Pending()
    with anyio.move_on_after(0.01):
        await pending
    assert not pending.done()
    pending.set_result(1)
    with anyio.fail_after(5):
        assert await pending == 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_await_from_loops_in_other_threads(backend: str) -> None:
    pending: Pending[str] = Pending()
    results: list[str] = []

    async def waiter() -> None:
        with anyio.fail_after(5):
            results.append(await pending)

    threads = [
        threading.Thread(target=anyio.run, args=(waiter,), kwargs={"backend": backend})
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    _wait_for(lambda: _waiters(pending) == 2)
    pending.set_result(backend)
    for thread in threads:
        thread.join(5)
    assert results == [backend, backend]
