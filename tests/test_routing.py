"""Unit tests for output routing: which request the output of the current code belongs to.

In-process: jobs are made by hand, threads are plain `threading.Thread`s, and the module's global
state (the latest execute request, the policy) is restored after each test.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.to_thread
import pytest

import async_kernel.output._routing
from async_kernel._enums import Channel
from async_kernel._patches import ProcessPatches
from async_kernel.output._routing import (
    ThreadParentPolicy,
    current_parent,
    output_to,
    reset_thread_parent,
    set_latest_execute,
    set_thread_parent,
    set_thread_parent_policy,
)
from async_kernel.wire._job import Job, current_job
from async_kernel.wire._session import Message

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ()

TIMEOUT = 10.0
T = TypeVar("T")


def make_job(name: str = "") -> Job:
    msg = Message(header={"msg_id": name}, parent_header={}, metadata={}, content={})
    return Job(msg=msg, channel=Channel.shell)


def in_thread(func: Callable[[], T]) -> T:
    """Run `func` in a new plain thread and return its result (or raise its exception)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(func).result(TIMEOUT)


def in_plain_thread(func: Callable[[], object]) -> object:
    """Run `func` in a new `threading.Thread` (started here) and return its result."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(func()))
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    return result[0]


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    """Start each test with no latest request, the default policy and no bound parent."""
    state = async_kernel.output._routing._State  # pyright: ignore[reportPrivateUsage]
    saved = (state.latest, state.policy)
    state.latest, state.policy = None, ThreadParentPolicy.latest
    token = set_thread_parent(None)
    try:
        yield
    finally:
        reset_thread_parent(token)
        state.latest, state.policy = saved


def test_all_names_exist() -> None:
    assert isinstance(async_kernel.output._routing.__all__, tuple)
    for name in async_kernel.output._routing.__all__:
        assert hasattr(async_kernel.output._routing, name), name


def test_no_parent_at_all() -> None:
    assert current_parent() is None
    assert in_thread(current_parent) is None


def test_latest_execute_is_the_fallback_everywhere() -> None:
    a, b = make_job("a"), make_job("b")
    set_latest_execute(a)
    assert current_parent() is a
    assert in_thread(current_parent) is a
    set_latest_execute(b)
    assert current_parent() is b
    assert in_plain_thread(current_parent) is b


def test_context_parent_beats_bound_parent_and_latest() -> None:
    ctx, bound, latest = make_job("ctx"), make_job("bound"), make_job("latest")
    set_latest_execute(latest)
    token = set_thread_parent(bound)
    try:
        assert current_parent() is bound
        ctx_token = current_job.set(ctx)
        try:
            assert current_parent() is ctx
        finally:
            current_job.reset(ctx_token)
        assert current_parent() is bound
    finally:
        reset_thread_parent(token)
    assert current_parent() is latest


def test_bound_parent_belongs_to_its_thread_only() -> None:
    bound, latest = make_job("bound"), make_job("latest")
    set_latest_execute(latest)
    seen_inside: list[Job | None] = []
    seen_outside: list[Job | None] = []
    bound_set = threading.Event()
    looked = threading.Event()

    def worker() -> None:
        token = set_thread_parent(bound)
        bound_set.set()
        assert looked.wait(TIMEOUT)
        seen_inside.append(current_parent())
        reset_thread_parent(token)
        seen_inside.append(current_parent())

    thread = threading.Thread(target=worker)
    thread.start()
    assert bound_set.wait(TIMEOUT)
    seen_outside.append(current_parent())
    looked.set()
    thread.join(TIMEOUT)
    assert seen_outside == [latest]
    assert seen_inside == [bound, latest]


def test_nested_set_and_reset_restore_in_order() -> None:
    a, b = make_job("a"), make_job("b")
    outer = set_thread_parent(a)
    inner = set_thread_parent(b)
    assert current_parent() is b
    reset_thread_parent(inner)
    assert current_parent() is a
    reset_thread_parent(outer)
    assert current_parent() is None


def test_output_to_sets_context_and_thread_and_restores_both() -> None:
    a, b, latest = make_job("a"), make_job("b"), make_job("latest")
    set_latest_execute(latest)
    ctx_token = current_job.set(b)
    try:
        with output_to(a) as parent:
            assert parent is a
            assert current_parent() is a
            assert current_job.get() is a
        assert current_job.get() is b
        assert current_parent() is b
    finally:
        current_job.reset(ctx_token)
    assert current_parent() is latest


def test_output_to_restores_after_an_exception() -> None:
    a = make_job("a")
    with pytest.raises(RuntimeError, match="inside"), output_to(a):
        raise RuntimeError("inside")
    assert current_parent() is None
    assert current_job.get() is None


def test_output_to_in_a_plain_thread_beats_latest() -> None:
    a, latest = make_job("a"), make_job("latest")
    set_latest_execute(latest)

    def work() -> tuple[Job | None, Job | None]:
        with output_to(a):
            inside = current_parent()
        return inside, current_parent()

    assert in_plain_thread(work) == (a, latest)


def test_policy_values_and_validation() -> None:
    assert [p.value for p in ThreadParentPolicy] == ["latest", "starter"]
    set_thread_parent_policy("latest")
    with pytest.raises(ValueError, match="sometimes"):
        set_thread_parent_policy("sometimes")
    assert async_kernel.output._routing._State.policy is ThreadParentPolicy.latest  # pyright: ignore[reportPrivateUsage]


@pytest.fixture
def starters() -> Iterator[None]:
    """`Thread.start` remembers the starting cell, as in a running kernel."""
    patches = ProcessPatches()
    patches.remember_thread_starters()
    try:
        yield
    finally:
        patches.restore()


@pytest.mark.usefixtures("starters")
def test_starter_policy_sends_a_plain_thread_to_the_cell_that_started_it() -> None:
    a, b = make_job("a"), make_job("b")
    set_thread_parent_policy(ThreadParentPolicy.starter)
    set_latest_execute(a)
    go = threading.Event()
    seen: list[Job | None] = []

    def worker() -> None:
        assert go.wait(TIMEOUT)
        seen.append(current_parent())

    thread = threading.Thread(target=worker)
    token = current_job.set(a)
    try:
        thread.start()
    finally:
        current_job.reset(token)
    set_latest_execute(b)  # the user moved on to cell b
    go.set()
    thread.join(TIMEOUT)
    assert seen == [a]

    # Under `latest`, the same thread's output goes to the newest cell.
    set_thread_parent_policy("latest")
    seen.clear()
    go.clear()
    thread = threading.Thread(target=worker)
    token = current_job.set(a)
    try:
        thread.start()
    finally:
        current_job.reset(token)
    go.set()
    thread.join(TIMEOUT)
    assert seen == [b]


@pytest.mark.usefixtures("starters")
def test_starter_policy_without_a_starter_falls_back_to_latest() -> None:
    latest = make_job("latest")
    set_thread_parent_policy("starter")
    set_latest_execute(latest)
    # Started where no request is current and none is latest yet: nothing to remember.
    async_kernel.output._routing._State.latest = None  # pyright: ignore[reportPrivateUsage]
    go = threading.Event()
    seen: list[Job | None] = []

    def worker() -> None:
        assert go.wait(TIMEOUT)
        seen.append(current_parent())

    thread = threading.Thread(target=worker)
    thread.start()
    set_latest_execute(latest)
    go.set()
    thread.join(TIMEOUT)
    assert seen == [latest]


def test_starter_policy_bound_parent_still_wins() -> None:
    a, bound = make_job("a"), make_job("bound")
    set_thread_parent_policy("starter")

    def work() -> Job | None:
        token = set_thread_parent(bound)
        try:
            return current_parent()
        finally:
            reset_thread_parent(token)

    token = current_job.set(a)
    try:
        assert in_plain_thread(work) is bound
    finally:
        current_job.reset(token)


def test_thread_start_hook_is_undone_by_restore() -> None:
    original = threading.Thread.start
    patches = ProcessPatches()
    patches.remember_thread_starters()
    try:
        assert threading.Thread.start is not original
        # Threads still start and run normally through the hook.
        assert in_plain_thread(lambda: 42) == 42
    finally:
        patches.restore()
    assert threading.Thread.start is original


@pytest.mark.anyio
async def test_context_travels_into_tasks_and_threads(anyio_backend: str) -> None:
    a, latest = make_job("a"), make_job("latest")
    set_latest_execute(latest)
    token = current_job.set(a)
    try:
        seen = [await anyio.to_thread.run_sync(current_parent)]
        if anyio_backend == "asyncio":
            seen.append(await asyncio.to_thread(current_parent))
        async with anyio.create_task_group() as tg:

            async def task() -> None:
                seen.append(current_parent())

            tg.start_soon(task)
        # A plain executor does not copy the context: its workers get the latest request.
        with ThreadPoolExecutor(1) as pool:
            from_pool = pool.submit(current_parent).result(TIMEOUT)
    finally:
        current_job.reset(token)
    assert len(seen) == (3 if anyio_backend == "asyncio" else 2)
    assert all(parent is a for parent in seen), seen
    assert from_pool is latest
