"""Tests for the `Caller`: lifecycle, scheduling from anywhere, cancellation, workers."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import aiologic
import anyio
import pytest

import async_kernel.callers._caller
from async_kernel._enums import Channel
from async_kernel.callers._caller import Caller, get_caller
from async_kernel.callers._pending import Pending, PendingCancelled
from async_kernel.wire._job import Job, current_job, get_job
from async_kernel.wire._session import Message

if TYPE_CHECKING:
    from collections.abc import Iterator

TIMEOUT = 10


@pytest.fixture
def caller(anyio_backend: str) -> Iterator[Caller]:
    """A caller on its own thread, for each backend."""
    started = Caller.start_new(backend=anyio_backend)  # pyright: ignore[reportArgumentType]
    yield started
    started.stop(force=True)
    assert started.thread is not None
    started.thread.join(TIMEOUT)


def _thread_name() -> str:
    return threading.current_thread().name


async def _async_thread_name() -> str:
    await anyio.lowlevel.checkpoint()
    return threading.current_thread().name


def _make_job() -> Job:
    header = {"msg_id": "m1", "msg_type": "execute_request"}
    return Job(Message(header=header, parent_header={}, metadata={}, content={}), Channel.shell)


def test_all_is_declared() -> None:
    assert set(async_kernel.callers._caller.__all__) == {"Caller", "get_caller"}


def test_no_caller_on_a_plain_thread() -> None:
    with pytest.raises(RuntimeError, match="runs no Caller"):
        Caller()
    with pytest.raises(RuntimeError, match="runs no Caller"):
        get_caller()


@pytest.mark.anyio
async def test_attach(anyio_backend: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with Caller.attach(name="attached", protected=True) as caller:
            assert Caller() is caller
            assert get_caller("attached") is caller
            assert caller.backend == anyio_backend
            assert caller.running
            assert caller.protected
            assert caller.thread is threading.current_thread()
            assert caller.ident == threading.get_ident()
            assert await caller.call_soon(_async_thread_name) == threading.current_thread().name
            with pytest.raises(RuntimeError, match="already runs a Caller"):
                async with Caller.attach():
                    pass
            left_running = caller.call_soon(anyio.sleep_forever)
            await anyio.wait_all_tasks_blocked()
        assert left_running.cancelled(), "work still running at exit is cancelled"
        assert not caller.running
        with pytest.raises(RuntimeError):
            Caller()
        with pytest.raises(KeyError):
            Caller.get_instance("attached")
        with pytest.raises(RuntimeError, match="stopped"):
            caller.call_soon(_thread_name)


@pytest.mark.anyio
async def test_attach_ends_its_calls_before_it_returns() -> None:
    cleaned: list[str] = []

    async def stubborn() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            pass  # swallowed once: the exit still ends the call at its next await
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):  # a cleanup that takes many loop turns
                for _ in range(50):
                    await anyio.lowlevel.checkpoint()
            cleaned.append("stubborn")

    with anyio.fail_after(TIMEOUT):
        async with Caller.attach() as caller:
            pending = caller.call_soon(stubborn)
            await anyio.wait_all_tasks_blocked()
        assert cleaned == ["stubborn"], "the call ended before `attach` returned"
        assert pending.cancelled()


@pytest.mark.anyio
async def test_attach_lets_the_blocks_exception_through() -> None:
    with pytest.raises(LookupError, match="inside"):
        async with Caller.attach():
            raise LookupError("inside")
    with pytest.raises(RuntimeError):
        Caller()


def test_start_new_lookup_and_stop(anyio_backend: str) -> None:
    caller = Caller.start_new(name="lifecycle", backend=anyio_backend)  # pyright: ignore[reportArgumentType]
    assert caller.thread is not None
    assert caller.thread.name == "lifecycle"
    assert caller.thread.daemon
    assert caller.running
    assert caller.backend == anyio_backend
    assert Caller.get_instance("lifecycle") is caller
    assert caller in Caller.all_callers()
    assert repr(caller).startswith(f"<Caller lifecycle {anyio_backend} running")
    with pytest.raises(ValueError, match="already exists"):
        Caller.start_new(name="lifecycle")
    assert caller.call_soon(Caller).result(TIMEOUT) is caller
    blocked = caller.call_soon(anyio.sleep_forever)
    caller.stop()
    with pytest.raises(PendingCancelled):
        blocked.result(TIMEOUT)
    caller.thread.join(TIMEOUT)
    assert not caller.thread.is_alive()
    assert not caller.running
    assert caller not in Caller.all_callers(running_only=False)
    assert "stopped" in repr(caller)
    with pytest.raises(KeyError):
        Caller.get_instance("lifecycle")
    with pytest.raises(RuntimeError, match="stopped"):
        caller.call_soon(_thread_name)
    caller.stop()  # stopping twice is harmless


def test_stop_from_inside_and_reuse_the_name(anyio_backend: str) -> None:
    caller = Caller.start_new(name="self-stopper", backend=anyio_backend)  # pyright: ignore[reportArgumentType]

    async def stop_myself() -> None:
        Caller().stop()
        await anyio.sleep_forever()

    with pytest.raises(PendingCancelled):
        caller.call_soon(stop_myself).result(TIMEOUT)
    assert not caller.running
    # A stopped caller's name is free again, even before its thread has ended.
    again = Caller.start_new(name="self-stopper", backend=anyio_backend)  # pyright: ignore[reportArgumentType]
    assert Caller.get_instance("self-stopper") is again
    again.stop()


def test_stop_ends_every_call_before_the_thread(anyio_backend: str) -> None:
    """Stopping cancels calls until they end, even one that swallows a cancellation, and
    the caller's thread ends only after their cleanup ran."""
    caller = Caller.start_new(backend=anyio_backend)  # pyright: ignore[reportArgumentType]
    started = threading.Semaphore(0)
    cleaned: list[str] = []

    async def stubborn() -> None:
        started.release()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            pass  # swallowed once: the stop still ends the call at its next await
        try:
            await anyio.sleep_forever()
        finally:
            cleaned.append("stubborn")

    async def queued() -> None:
        started.release()
        try:
            await anyio.sleep_forever()
        finally:
            await anyio.lowlevel.cancel_shielded_checkpoint()
            cleaned.append("queued")

    pendings = [caller.call_soon(stubborn), caller.queue_call(queued)]
    assert started.acquire(timeout=TIMEOUT)
    assert started.acquire(timeout=TIMEOUT)
    caller.stop()
    assert caller.thread is not None
    caller.thread.join(TIMEOUT)
    assert not caller.thread.is_alive()
    assert sorted(cleaned) == ["queued", "stubborn"]
    for pending in pendings:
        with pytest.raises(PendingCancelled, match="stopped before the call finished"):
            pending.result(0)


def test_protected_stop_needs_force() -> None:
    caller = Caller.start_new(protected=True)
    with pytest.raises(RuntimeError, match="protected"):
        caller.stop()
    assert caller.running
    caller.stop(force=True)
    assert caller.thread is not None
    caller.thread.join(TIMEOUT)
    assert not caller.running


def test_default_backend_follows_the_current_caller(caller: Caller) -> None:
    child = caller.call_soon(Caller.start_new).result(TIMEOUT)
    try:
        assert child.backend == caller.backend
    finally:
        child.stop()
    outside = Caller.start_new()
    try:
        assert outside.backend == "asyncio", "outside any caller the default is asyncio"
    finally:
        outside.stop()


def _all_methods(caller: Caller, func: Any, *args: Any) -> dict[str, Pending[Any]]:
    return {
        "call_direct": caller.call_direct(func, *args),
        "call_soon": caller.call_soon(func, *args),
        "call_later": caller.call_later(0.001, func, *args),
        "queue_call": caller.queue_call(func, *args),
        "to_thread": caller.to_thread(func, *args),
    }


@pytest.mark.parametrize("func", [_thread_name, _async_thread_name])
def test_methods_from_a_plain_thread(caller: Caller, func: Any) -> None:
    names = {method: p.result(TIMEOUT) for method, p in _all_methods(caller, func).items()}
    worker = names.pop("to_thread")
    assert names == dict.fromkeys(names, caller.name)
    assert worker.startswith("async_kernel_worker_")


@pytest.mark.parametrize("func", [_thread_name, _async_thread_name])
def test_methods_from_the_loop_thread(caller: Caller, func: Any) -> None:
    async def inside() -> dict[str, Any]:
        pendings = _all_methods(Caller(), func)
        return {method: await p for method, p in pendings.items()}

    names = caller.call_soon(inside).result(TIMEOUT)
    worker = names.pop("to_thread")
    assert names == dict.fromkeys(names, caller.name)
    assert worker.startswith("async_kernel_worker_")


def test_blocking_on_the_own_thread_raises(caller: Caller) -> None:
    def block() -> None:
        Caller().call_soon(_thread_name).result(TIMEOUT)

    with pytest.raises(RuntimeError, match="deadlock"):
        caller.call_soon(block).result(TIMEOUT)


def test_call_later_waits(caller: Caller) -> None:
    pending = caller.call_later(0.05, anyio.current_time)
    start = caller.call_soon(anyio.current_time).result(TIMEOUT)
    assert pending.result(TIMEOUT) - start >= 0.04


def test_call_direct_awaits_an_awaitable_result(caller: Caller) -> None:
    def returns_coroutine() -> Any:
        return _async_thread_name()

    assert caller.call_direct(returns_coroutine).result(TIMEOUT) == caller.name


def test_across_backends() -> None:
    on_asyncio = Caller.start_new(backend="asyncio")
    on_trio = Caller.start_new(backend="trio")
    try:

        async def ask(other: Caller) -> str:
            return await other.call_soon(_async_thread_name)

        assert on_asyncio.call_soon(ask, on_trio).result(TIMEOUT) == on_trio.name
        assert on_trio.call_soon(ask, on_asyncio).result(TIMEOUT) == on_asyncio.name
    finally:
        on_asyncio.stop()
        on_trio.stop()


def test_loop_awaits_a_pending_completed_by_a_plain_thread(caller: Caller) -> None:
    pending: Pending[str] = Pending()
    waiting = threading.Event()

    async def wait_for_it() -> str:
        waiting.set()
        return await pending

    result = caller.call_soon(wait_for_it)
    assert waiting.wait(TIMEOUT)
    threading.Thread(target=pending.set_result, args=("from thread",)).start()
    assert result.result(TIMEOUT) == "from thread"


@pytest.mark.parametrize("where", ["plain thread", "loop thread"])
def test_cancel_a_running_call(caller: Caller, where: str) -> None:
    started = threading.Event()
    never = aiologic.Event()
    cleaned_up = threading.Event()

    async def work() -> None:
        started.set()
        try:
            await never
        finally:
            cleaned_up.set()

    pending = caller.call_soon(work)
    assert started.wait(TIMEOUT)
    if where == "plain thread":
        assert pending.cancel("stop now")
    else:
        assert caller.call_soon(pending.cancel, "stop now").result(TIMEOUT)
    with pytest.raises(PendingCancelled, match="stop now"):
        pending.result(TIMEOUT)
    assert pending.cancelled()
    assert cleaned_up.is_set(), "its finally ran before it reported cancelled"
    assert caller.call_soon(_thread_name).result(TIMEOUT) == caller.name


def test_cancel_before_start_never_runs(caller: Caller) -> None:
    ran: list[str] = []
    release = aiologic.Event()

    async def work(label: str) -> None:
        if label == "blocker":
            await release
        ran.append(label)

    blocker = caller.queue_call(work, "blocker")
    queued = caller.queue_call(work, "queued")  # waits behind the blocker
    later = caller.call_later(60, work, "later")
    assert queued.cancel()
    assert later.cancel()
    release.set()
    blocker.result(TIMEOUT)
    caller.queue_call(work, "after").result(TIMEOUT)
    assert ran == ["blocker", "after"], "the cancelled calls never ran"
    assert queued.cancelled()
    with pytest.raises(PendingCancelled):
        later.result(TIMEOUT)


def test_exceptions_propagate(caller: Caller) -> None:
    def sync_fail() -> None:
        raise ValueError("sync")

    async def async_fail() -> None:
        await anyio.lowlevel.checkpoint()
        raise ValueError("async")

    def interrupt() -> None:
        raise KeyboardInterrupt

    for func in (sync_fail, async_fail):
        for pending in _all_methods(caller, func).values():
            with pytest.raises(ValueError, match="sync"):
                pending.result(TIMEOUT)
    for pending in _all_methods(caller, interrupt).values():
        assert isinstance(pending.exception(TIMEOUT), KeyboardInterrupt)
    assert caller.running, "a KeyboardInterrupt in a call does not kill the loop"
    assert caller.call_soon(_thread_name).result(TIMEOUT) == caller.name


class _Recorder:
    """Records who ran when, per queued function, and the highest concurrency seen."""

    def __init__(self) -> None:
        self.order: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.active: dict[str, int] = defaultdict(int)
        self.most_active: dict[str, int] = defaultdict(int)

    def _enter(self, key: str, thread: int, seq: int) -> None:
        self.active[key] += 1
        self.most_active[key] = max(self.most_active[key], self.active[key])
        self.order[key].append((thread, seq))

    def sync_call(self, thread: int, seq: int) -> None:
        self._enter("sync", thread, seq)
        self.active["sync"] -= 1

    async def async_call(self, thread: int, seq: int) -> None:
        self._enter("async", thread, seq)
        await anyio.lowlevel.checkpoint()  # a chance to overlap, if the queue allowed it
        await anyio.lowlevel.checkpoint()
        self.active["async"] -= 1


def test_queue_call_keeps_fifo_per_function_under_contention(caller: Caller) -> None:
    recorder = _Recorder()
    threads, per_thread = 8, 125
    barrier = threading.Barrier(threads)
    pendings: list[Pending[None]] = []
    lock = threading.Lock()

    def submit(index: int) -> None:
        barrier.wait(TIMEOUT)
        mine = []
        for seq in range(per_thread):
            # A fresh bound method each time: equal bound methods share one queue.
            func = recorder.async_call if seq % 2 else recorder.sync_call
            mine.append(caller.queue_call(func, index, seq))
        with lock:
            pendings.extend(mine)

    workers = [threading.Thread(target=submit, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(TIMEOUT)
    assert len(pendings) == threads * per_thread
    for pending in pendings:
        pending.result(TIMEOUT)
    assert dict(recorder.most_active) == {"sync": 1, "async": 1}, "calls of one function overlapped"
    for key, parity in (("sync", 0), ("async", 1)):
        runs = recorder.order[key]
        assert len(runs) == threads * len(range(parity, per_thread, 2))
        for index in range(threads):
            seqs = [seq for thread, seq in runs if thread == index]
            assert seqs == list(range(parity, per_thread, 2)), f"{key} calls of {index} reordered"


@pytest.mark.parametrize("method", ["call_direct", "call_soon", "call_later", "queue_call"])
def test_contextvars_travel(caller: Caller, method: str) -> None:
    job = _make_job()

    async def read_async() -> Job | None:
        await anyio.lowlevel.checkpoint()
        return get_job()

    def change() -> None:
        current_job.set(None)

    token = current_job.set(job)
    try:
        schedule = getattr(caller, method)
        args = (0.001,) if method == "call_later" else ()
        assert schedule(*args, get_job).result(TIMEOUT) is job
        assert schedule(*args, read_async).result(TIMEOUT) is job
        assert caller.to_thread(read_async).result(TIMEOUT) is job
        schedule(*args, change).result(TIMEOUT)
        assert get_job() is job, "a call's changes stay in the call"
    finally:
        current_job.reset(token)
    assert caller.call_soon(get_job).result(TIMEOUT) is None


def test_workers_are_reused(caller: Caller) -> None:
    first = caller.to_thread(_thread_name)
    name = first.result(TIMEOUT)
    assert first.caller is not None
    assert first.caller.backend == caller.backend
    assert caller.to_thread(_thread_name).result(TIMEOUT) == name, "an idle worker is reused"
    release = threading.Event()
    busy = caller.to_thread(release.wait, TIMEOUT)
    other = caller.to_thread(_thread_name).result(TIMEOUT)
    release.set()
    assert busy.result(TIMEOUT)
    assert other != name, "a busy worker is not given more work"


def test_idle_workers_retire(caller: Caller, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Caller, "worker_idle_timeout", 0.05)
    pending = caller.to_thread(_thread_name)
    pending.result(TIMEOUT)
    worker = pending.caller
    assert worker is not None
    assert worker.thread is not None
    worker.thread.join(TIMEOUT)
    assert not worker.thread.is_alive()
    assert worker not in Caller.all_callers(running_only=False)
    fresh = caller.to_thread(_thread_name)
    assert fresh.result(TIMEOUT) != worker.name
