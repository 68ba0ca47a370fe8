"""The machinery under `Caller`: hand a call to one event loop from any thread and run it there.

A `Scheduler` serves calls once `_bind_loop` binds it to the running loop of its thread; until
then calls from other threads wait in a backlog, and once it is closed they are refused and
their `Pending` is cancelled. On the loop each call runs as a task in its own cancel scope (or,
for `Caller.call_direct`, inside the loop's callback), calls of one function can be queued to
run one at a time, and the outcome completes the call's `Pending`. `Caller` adds the thread,
the registry and the public methods that build each `Pending`.

On asyncio a call's task is a plain `asyncio.Task` created in the call's context, not a task of
AnyIO's task group: AnyIO wraps each of its tasks in a cancel scope and an event of its own,
which cost as much as the rest of a quick request. The scheduler keeps those tasks and the
cancel scopes of the calls itself: stopping cancels every scope, and `_drain` waits for the
tasks before the caller's task group ends. On trio calls run in the task group.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from inspect import isawaitable, iscoroutine
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

try:
    from sniffio import current_async_library_cvar as _sniffio_cvar
except ImportError:  # pragma: no cover - AnyIO then detects asyncio without it
    _sniffio_cvar = None

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Awaitable, Callable, Coroutine
    from contextvars import Context

    from anyio.abc import TaskGroup

    from async_kernel._enums import Backend
    from async_kernel.callers._pending import Pending

__all__ = ("Scheduler",)

T = TypeVar("T")
_Call = tuple["Pending[Any]", "Callable[..., Any]", tuple[Any, ...], dict[str, Any]]
"""What runs: the pending to complete, the function, its positional and keyword arguments."""

_log = logging.getLogger(__name__)

_STOPPED = "The caller stopped before the call finished"


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


class Scheduler:
    """Runs calls on one thread's event loop, handed over from any thread: the base of `Caller`.

    Not meant to be used on its own: `Caller` binds it to a loop and builds each call's
    `Pending`. `_schedule`, `_dispatch` and `_submit` may be called from any thread and never
    block; the other methods run on the loop's thread.
    """

    __slots__ = (
        "_backend",
        "_backlog",
        "_cancelled_exc",
        "_closed",
        "_ident",
        "_local",
        "_lock",
        "_loop",
        "_queues",
        "_scopes",
        "_tasks",
        "_tg",
        "_threadsafe",
    )

    _backend: Backend
    _closed: bool
    _lock: threading.Lock
    _ident: int | None
    _tg: TaskGroup | None
    _loop: asyncio.AbstractEventLoop | None
    _tasks: set[asyncio.Task[object]]
    _scopes: set[anyio.CancelScope]
    _queues: dict[Any, deque[tuple[Context, _Call]]]
    _backlog: list[tuple[Callable[..., object], tuple[Any, ...]]] | None
    _threadsafe: Callable[..., object]
    _local: Callable[..., object] | None
    _cancelled_exc: type[BaseException]

    def _init_scheduler(self, backend: Backend) -> None:
        """Set the state of a scheduler not bound to its loop yet."""
        self._backend = backend
        self._ident = None
        self._tg = None
        self._loop = None
        self._tasks = set()
        self._scopes = set()
        self._closed = False
        self._lock = threading.Lock()
        self._queues = {}
        # Until the loop is bound, calls from other threads wait in the backlog.
        self._backlog = []
        self._threadsafe = self._buffer
        self._local = None
        self._cancelled_exc = BaseException

    # -- binding to the loop ---------------------------------------------------------------

    def _bind_loop(self, tg: TaskGroup) -> None:
        """Serve calls in `tg`, on this thread's running loop; first run what the backlog holds."""
        self._ident = threading.get_ident()
        self._tg = tg
        self._cancelled_exc = anyio.get_cancelled_exc_class()
        if self._backend == "asyncio":
            loop = asyncio.get_running_loop()
            threadsafe, self._local = loop.call_soon_threadsafe, loop.call_soon
            self._loop = loop
        else:
            import trio

            threadsafe = trio.lowlevel.current_trio_token().run_sync_soon
        with self._lock:
            backlog, self._backlog = self._backlog or [], None
            self._threadsafe = threadsafe
        for fn, args in backlog:
            fn(*args)
        if self._closed:
            tg.cancel_scope.cancel()

    def _unbind_loop(self) -> None:
        """Once `_closed` is set: drop the task group and cancel the calls left in the backlog."""
        self._tg = None
        if self._threadsafe == self._buffer:  # never bound: refuse what still comes
            self._threadsafe = self._refuse
        with self._lock:
            backlog, self._backlog = self._backlog or [], None
        for fn, args in backlog:  # each sees `_closed` and cancels its pending
            fn(*args)

    def _cancel_all(self) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        for scope in list(self._scopes):  # the calls' own scopes: asyncio's tasks are not in tg
            scope.cancel()

    async def _drain(self) -> None:
        """Wait until the calls' asyncio tasks ended (once `_cancel_all` cancelled them)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    # -- handing calls to the loop (any thread) --------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            msg = f"{self!r} is stopped and accepts no more calls."
            raise RuntimeError(msg)

    def _schedule(self, pending: Pending[Any], fn: Callable[..., object], /, *args: Any) -> None:
        """Have the loop call `fn(*args)` soon; the pending is cancelled if the loop is gone."""
        self._check_open()
        try:
            if self._local is not None and self._ident == threading.get_ident():
                self._local(fn, *args)
            else:
                self._threadsafe(fn, *args)
        except Exception:  # the loop closed in the meantime
            pending.set_cancelled(_STOPPED)

    def _dispatch(self, pending: Pending[Any], fn: Callable[..., object], /, *args: Any) -> None:
        """Like `_schedule`, but on the loop's own thread call `fn(*args)` right away.

        Only for `fn`s that start tasks: user code must never run inside a scheduling method.
        """
        self._check_open()
        if self._ident == threading.get_ident() and self._tg is not None:
            fn(*args)
            return
        try:
            self._threadsafe(fn, *args)
        except Exception:  # the loop closed in the meantime
            pending.set_cancelled(_STOPPED)

    def _submit(self, fn: Callable[..., object], /, *args: Any) -> None:
        """Have the loop call `fn(*args)` soon, if it still runs (for internal callbacks)."""
        if self._ident == threading.get_ident() and self._tg is not None:
            fn(*args)
            return
        try:
            self._threadsafe(fn, *args)
        except Exception:  # the loop ended: nothing left to do there
            _log.debug("%r is gone; dropped %r", self, fn)

    def _refuse(self, fn: Callable[..., object], /, *args: Any) -> None:
        msg = f"{self!r} is stopped and accepts no more calls."
        raise RuntimeError(msg)

    def _buffer(self, fn: Callable[..., object], /, *args: Any) -> None:
        with self._lock:
            if self._backlog is not None:
                self._backlog.append((fn, args))
                return
        self._threadsafe(fn, *args)

    # -- running calls (the loop's thread) -------------------------------------------------

    def _spawn(self, ctx: Context, call: _Call, delay: float) -> None:
        if call[0].done():
            return
        if not self._start_task(ctx, self._run, call, delay):
            call[0].set_cancelled(_STOPPED)

    def _start_task(
        self, ctx: Context, fn: Callable[..., Coroutine[Any, Any, object]], /, *args: Any
    ) -> bool:
        """Start `fn(*args)` in the task group, running in a copy of `ctx`; False if closed.

        Runs on the loop's thread, often in a scheduler callback: it must never raise (a trio
        `run_sync_soon` callback that raises crashes the loop).
        """
        if self._closed or self._tg is None:
            return False
        if self._loop is not None:
            if _sniffio_cvar is not None:  # AnyIO's calls in the task then find asyncio at once
                ctx.run(_sniffio_cvar.set, "asyncio")
            try:
                task = self._loop.create_task(fn(*args), context=ctx)
            except RuntimeError:  # the loop is closing
                _log.debug("%r could not start %r", self, fn, exc_info=True)
                return False
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
            return True
        try:
            ctx.run(self._start_in_context, fn, args)
        except RuntimeError:  # the task group is closing
            _log.debug("%r could not start %r", self, fn, exc_info=True)
            return False
        return True

    def _start_in_context(
        self, fn: Callable[..., Coroutine[Any, Any, object]], args: tuple[Any, ...]
    ) -> None:
        assert self._tg is not None
        self._tg.start_soon(fn, *args)

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            _log.error("A call's task on %r failed", self, exc_info=exc)

    def _direct(self, ctx: Context, call: _Call) -> None:
        pending, func, args, kwargs = call
        if self._closed:
            pending.set_cancelled(_STOPPED)
            return
        if not pending.set_canceller(None):
            return
        try:
            result = ctx.run(func, *args, **kwargs)
        except BaseException as exc:
            pending.set_exception(exc)
            return
        if not isawaitable(result):
            pending.set_result(result)
        elif not self._start_task(ctx, self._run, (pending, _await, (result,), {}), 0.0):
            if iscoroutine(result):
                result.close()
            pending.set_cancelled(_STOPPED)

    async def _run(self, call: _Call, delay: float) -> None:
        """Run one call as a task, in its own cancel scope, and complete its pending."""
        pending, func, args, kwargs = call
        if self._closed:  # stopped before the task started
            pending.set_cancelled(_STOPPED)
            return
        scope = anyio.CancelScope()
        if not pending.set_canceller(functools.partial(self._submit, scope.cancel)):
            return  # cancelled before it started
        self._scopes.add(scope)
        try:
            with scope:
                if delay:
                    await anyio.sleep(delay)
                result = func(*args, **kwargs)
                if isawaitable(result):
                    result = await result
                if not pending.cancel_requested:
                    pending.set_result(result)
        except self._cancelled_exc:
            pending.set_cancelled(_STOPPED)
            raise
        except BaseException as exc:
            pending.set_exception(exc)
        finally:
            self._scopes.discard(scope)
            # A no-op unless its own scope was cancelled: by `cancel()`, or as the caller stopped.
            stopped = self._closed and not pending.cancel_requested
            pending.set_cancelled(_STOPPED if stopped else None)

    def _queue_next(self, key: object, queue: deque[Any]) -> None:
        """Start the next queued call of `key`, or retire the queue when it is empty."""
        while True:
            with self._lock:
                if not queue:
                    del self._queues[key]
                    return
                ctx, call = queue.popleft()
            if call[0].done():
                continue
            if self._start_task(ctx, self._run_queued, key, queue, call):
                return
            call[0].set_cancelled(_STOPPED)

    async def _run_queued(self, key: object, queue: deque[Any], call: _Call) -> None:
        try:
            await self._run(call, 0.0)
        finally:
            self._queue_next(key, queue)
