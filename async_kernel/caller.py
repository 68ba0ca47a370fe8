"""Callers: one per thread that runs an AnyIO event loop, and the way to hand it work from anywhere.

`Caller()` is the current thread's caller. `Caller.start_new()` starts a loop on a new thread;
`async with Caller.attach():` turns an already running loop into a caller. Every scheduling
method can be called from any thread, never blocks, copies the caller's contextvars into the
work and returns a `Pending`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import threading
from collections import deque
from contextvars import copy_context
from inspect import isawaitable, iscoroutine
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import anyio

try:
    from sniffio import current_async_library_cvar as _sniffio_cvar
except ImportError:  # pragma: no cover - AnyIO then detects asyncio without it
    _sniffio_cvar = None

from async_kernel.pending import Pending

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
    from contextvars import Context

    from anyio.abc import TaskGroup, TaskStatus

__all__ = ("Backend", "Caller", "get_caller")

T = TypeVar("T")
Backend = Literal["asyncio", "trio"]
_Call = tuple["Pending[Any]", "Callable[..., Any]", tuple[Any, ...], dict[str, Any]]
"""What runs: the pending to complete, the function, its positional and keyword arguments."""

_log = logging.getLogger(__name__)

_STOPPED = "The caller stopped before the call finished"

# The live callers by thread ident, and the idle worker callers by backend; one lock for both.
_registry: dict[int, Caller] = {}
_idle_workers: dict[str, list[Caller]] = {}
_registry_lock = threading.Lock()
_worker_ids = itertools.count(1)
_caller_ids = itertools.count(1)


def _current_backend() -> Backend:
    """Return the backend of the loop running in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return "trio"
    return "asyncio"


def _trio_time() -> float:
    import trio

    return trio.current_time()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


class Caller:
    """Runs calls on one thread's event loop; the methods that schedule work are thread-safe."""

    __slots__ = (
        "_backend",
        "_backlog",
        "_cancelled_exc",
        "_closed",
        "_ident",
        "_idle_scope",
        "_idle_since",
        "_is_worker",
        "_local",
        "_lock",
        "_name",
        "_protected",
        "_queues",
        "_ready",
        "_running",
        "_tg",
        "_thread",
        "_threadsafe",
    )

    _name: str
    _backend: Backend
    _protected: bool
    _is_worker: bool
    _running: bool
    _closed: bool
    _lock: threading.Lock
    _idle_since: float
    _thread: threading.Thread | None
    _ident: int | None
    _tg: TaskGroup | None
    _queues: dict[Any, deque[tuple[Context, _Call]]]
    _backlog: list[tuple[Callable[..., object], tuple[Any, ...]]] | None
    _threadsafe: Callable[..., object]
    _local: Callable[..., object] | None
    _cancelled_exc: type[BaseException]
    _ready: threading.Event | None
    _idle_scope: anyio.CancelScope | None

    worker_idle_timeout: ClassVar[float] = 30.0
    """Seconds a worker caller (see `to_thread`) may stay idle before its thread ends."""

    def __new__(cls) -> Caller:
        """Return the caller of the current thread.

        Raises:
            RuntimeError: This thread runs no caller.
        """
        caller = _registry.get(threading.get_ident())
        if caller is None:
            msg = (
                f"Thread {threading.current_thread().name!r} runs no Caller. Start one on a new "
                "thread with `Caller.start_new()`, or turn a running loop into one with "
                "`async with Caller.attach():`."
            )
            raise RuntimeError(msg)
        return caller

    @classmethod
    def _create(cls, name: str, backend: Backend, *, protected: bool, worker: bool) -> Caller:
        self = object.__new__(cls)
        self._name = name
        self._backend = backend
        self._protected = protected
        self._is_worker = worker
        self._thread = None
        self._ident = None
        self._tg = None
        self._running = False
        self._closed = False
        self._lock = threading.Lock()
        self._queues = {}
        # Until the loop is ready, calls from other threads wait in the backlog.
        self._backlog = []
        self._threadsafe = self._buffer
        self._local = None
        self._cancelled_exc = BaseException
        self._ready = None
        self._idle_scope = None
        self._idle_since = 0.0
        return self

    # -- starting, attaching, stopping -----------------------------------------------------

    @classmethod
    def start_new(
        cls,
        *,
        name: str | None = None,
        backend: Backend | None = None,
        protected: bool = False,
    ) -> Caller:
        """Start a caller on a new daemon thread called `name`; return once its loop runs.

        Args:
            name: The name of the caller and its thread (unique among live callers).
            backend: "asyncio" or "trio"; defaults to the current caller's backend, else asyncio.
            protected: Refuse `stop()` without `force=True`.

        Raises:
            ValueError: A running caller already has that name.
        """
        if name is not None and any(c.name == name for c in cls.all_callers()):
            msg = f"A caller named {name!r} already exists; pick another name or stop it first."
            raise ValueError(msg)
        if backend is None:
            current = _registry.get(threading.get_ident())
            backend = current.backend if current is not None else "asyncio"
        name = name or f"async_kernel_caller_{next(_caller_ids)}"
        caller = cls._create(name, backend, protected=protected, worker=False)
        caller._ready = threading.Event()
        caller._launch()
        caller._ready.wait()
        if not caller.running:
            msg = f"{caller!r} failed to start its event loop (see the log)."
            raise RuntimeError(msg)
        return caller

    @classmethod
    @contextlib.asynccontextmanager
    async def attach(
        cls, *, name: str | None = None, protected: bool = False
    ) -> AsyncGenerator[Caller]:
        """Make the running loop this thread's caller for the duration of an `async with` block.

        Use it inside a running AnyIO loop: `async with Caller.attach(name="Control") as caller:`.
        On exit the caller stops accepting calls, cancels what it still runs and is unregistered.

        Raises:
            RuntimeError: This thread already runs a caller.
        """
        if threading.get_ident() in _registry:
            msg = f"Thread {threading.current_thread().name!r} already runs a Caller."
            raise RuntimeError(msg)
        thread_name = threading.current_thread().name
        caller = cls._create(
            name or thread_name, _current_backend(), protected=protected, worker=False
        )
        # Entered by hand so that an exception of the block reaches the caller of `attach` as
        # it is, not wrapped in the task group's exception group.
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            await tg.start(caller._serve)
        except BaseException as exc:
            await tg.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        try:
            yield caller
        finally:
            caller._closed = True
            caller._cancel_all()
            await tg.__aexit__(None, None, None)

    def _launch(self) -> None:
        thread = threading.Thread(target=self._thread_main, name=self._name, daemon=True)
        self._thread = thread
        thread.start()
        self._ident = thread.ident

    def _thread_main(self) -> None:
        try:
            anyio.run(self._serve, backend=self._backend)
        except BaseException:
            _log.exception("The event loop of %r failed", self)
        finally:
            self._deactivate()  # again, in case the loop failed before `_serve` ran
            if self._ready is not None:
                self._ready.set()

    async def _serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve calls until stopped: the scheduler task of every caller."""
        try:
            async with anyio.create_task_group() as tg:
                if self._is_worker:
                    # Created here, in the loop: `_go_idle` may set its deadline before the
                    # watcher task first runs.
                    self._idle_scope = anyio.CancelScope()
                self._activate(tg)
                if self._is_worker:
                    tg.start_soon(self._retire_when_idle)
                task_status.started()
                if self._ready is not None:
                    self._ready.set()
                await anyio.sleep_forever()
        finally:
            self._deactivate()

    def _activate(self, tg: TaskGroup) -> None:
        ident = threading.get_ident()
        with _registry_lock:
            if ident in _registry:
                msg = f"Thread {threading.current_thread().name!r} already runs a Caller."
                raise RuntimeError(msg)
            _registry[ident] = self
        self._ident = ident
        self._thread = threading.current_thread()
        self._tg = tg
        self._cancelled_exc = anyio.get_cancelled_exc_class()
        if self._backend == "asyncio":
            loop = asyncio.get_running_loop()
            threadsafe, self._local = loop.call_soon_threadsafe, loop.call_soon
        else:
            import trio

            threadsafe = trio.lowlevel.current_trio_token().run_sync_soon
        self._running = True
        with self._lock:
            backlog, self._backlog = self._backlog or [], None
            self._threadsafe = threadsafe
        for fn, args in backlog:
            fn(*args)
        if self._closed:
            tg.cancel_scope.cancel()

    def _deactivate(self) -> None:
        self._closed = True
        self._running = False
        self._tg = None
        if self._threadsafe == self._buffer:  # never activated: refuse what still comes
            self._threadsafe = self._refuse
        with _registry_lock:
            if _registry.get(threading.get_ident()) is self:
                del _registry[threading.get_ident()]
        with self._lock:
            backlog, self._backlog = self._backlog or [], None
        for fn, args in backlog:  # each sees `_closed` and cancels its pending
            fn(*args)

    def stop(self, *, force: bool = False) -> None:
        """Stop accepting calls and cancel what runs; a started caller's thread then ends.

        Raises:
            RuntimeError: The caller is protected and `force` is False.
        """
        if self._protected and not force:
            msg = f"{self!r} is protected (the kernel needs it); use stop(force=True) to insist."
            raise RuntimeError(msg)
        if self._closed:
            return
        self._closed = True
        with _registry_lock:
            idle = _idle_workers.get(self._backend, [])
            if self in idle:
                idle.remove(self)
        self._submit(self._cancel_all)

    def _cancel_all(self) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    # -- lookup and properties -------------------------------------------------------------

    @classmethod
    def get_instance(cls, name: str) -> Caller:
        """Return the caller called `name` (a running one, if one that is stopping has it too).

        Raises:
            KeyError: No live caller has that name.
        """
        callers = cls.all_callers(running_only=False)
        for caller in sorted(callers, key=lambda c: not c.running):
            if caller.name == name:
                return caller
        msg = f"No caller named {name!r}; `Caller.all_callers()` lists the live ones."
        raise KeyError(msg)

    @classmethod
    def all_callers(cls, running_only: bool = True) -> list[Caller]:
        """Return the registered callers (only those accepting calls, if `running_only`)."""
        with _registry_lock:
            callers = list(_registry.values())
        return [c for c in callers if c.running or not running_only]

    @property
    def name(self) -> str:
        """The caller's name (also its thread's name for started callers)."""
        return self._name

    @property
    def thread(self) -> threading.Thread | None:
        """The thread that runs the caller's loop (None before it started)."""
        return self._thread

    @property
    def ident(self) -> int | None:
        """The ident of the caller's thread (None before it started)."""
        return self._ident

    @property
    def backend(self) -> Backend:
        """The AnyIO backend of the caller's loop."""
        return self._backend

    @property
    def protected(self) -> bool:
        """Whether `stop()` needs `force=True`."""
        return self._protected

    @property
    def running(self) -> bool:
        """Whether the loop runs and accepts calls."""
        return self._running and not self._closed

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped" if self._closed else "starting"
        flag = " protected" if self._protected else ""
        return f"<Caller {self._name} {self._backend} {state}{flag} thread={self._ident}>"

    # -- scheduling ------------------------------------------------------------------------

    def call_direct(
        self, func: Callable[..., T | Awaitable[T]], /, *args: Any, **kwargs: Any
    ) -> Pending[T]:
        """Run `func` inside the loop's scheduler callback, as soon as possible.

        Meant for short sync calls such as setting an event from another thread. If `func`
        returns an awaitable, it is awaited in a new task.
        """
        pending: Pending[T] = Pending(func, self)
        self._schedule(pending, self._direct, copy_context(), (pending, func, args, kwargs))
        return pending

    def call_soon(
        self, func: Callable[..., T | Awaitable[T]], /, *args: Any, **kwargs: Any
    ) -> Pending[T]:
        """Run `func` as a new task in the caller's loop."""
        pending: Pending[T] = Pending(func, self)
        self._dispatch(pending, self._spawn, copy_context(), (pending, func, args, kwargs), 0.0)
        return pending

    def call_later(
        self, delay: float, func: Callable[..., T | Awaitable[T]], /, *args: Any, **kwargs: Any
    ) -> Pending[T]:
        """Run `func` as a new task after `delay` seconds (cancelling it also cancels the wait)."""
        pending: Pending[T] = Pending(func, self)
        self._dispatch(pending, self._spawn, copy_context(), (pending, func, args, kwargs), delay)
        return pending

    def queue_call(
        self, func: Callable[..., T | Awaitable[T]], /, *args: Any, **kwargs: Any
    ) -> Pending[T]:
        """Run `func` after the earlier queued calls of the same function (by `==`) finished.

        Calls of one function run one at a time, in the order `queue_call` accepted them;
        calls of different functions run concurrently. `func` must be hashable (equal bound
        methods of one object share a queue).
        """
        pending: Pending[T] = Pending(func, self)
        item = (copy_context(), (pending, func, args, kwargs))
        self._check_open()
        with self._lock:
            queue = self._queues.get(func)
            if queue is not None:
                queue.append(item)
                return pending
            self._queues[func] = queue = deque((item,))
        self._dispatch(pending, self._queue_next, func, queue)
        return pending

    def to_thread(
        self, func: Callable[..., T | Awaitable[T]], /, *args: Any, **kwargs: Any
    ) -> Pending[T]:
        """Run `func` at once on an idle worker caller (its own thread and loop, same backend).

        Workers are reused; one idle for `Caller.worker_idle_timeout` seconds retires.
        """
        worker = self._take_worker(self._backend)
        pending: Pending[T] = Pending(func, worker)
        # Added before the call can finish, so it runs in the worker's thread as the call ends.
        pending.add_done_callback(worker._release)
        worker._dispatch(pending, worker._spawn, copy_context(), (pending, func, args, kwargs), 0.0)
        return pending

    # -- scheduling internals --------------------------------------------------------------

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
        try:
            ctx.run(self._start_in_context, fn, args)
        except RuntimeError:  # the task group is closing
            _log.debug("%r could not start %r", self, fn, exc_info=True)
            return False
        return True

    def _start_in_context(
        self, fn: Callable[..., Coroutine[Any, Any, object]], args: tuple[Any, ...]
    ) -> None:
        if _sniffio_cvar is not None and self._backend == "asyncio":
            # AnyIO detects asyncio by `current_task()`, which is None in a loop callback.
            _sniffio_cvar.set("asyncio")
        assert self._tg is not None
        self._tg.start_soon(fn, *args)

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
        scope = anyio.CancelScope()
        if not pending.set_canceller(functools.partial(self._submit, scope.cancel)):
            return  # cancelled before it started
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
            pending.set_cancelled()  # no-op unless its own scope was cancelled

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

    # -- worker pool -----------------------------------------------------------------------

    @classmethod
    def _take_worker(cls, backend: Backend) -> Caller:
        with _registry_lock:
            idle = _idle_workers.setdefault(backend, [])
            while idle:
                worker = idle.pop()
                if not worker._closed:
                    return worker
        name = f"async_kernel_worker_{next(_worker_ids)}"
        worker = cls._create(name, backend, protected=False, worker=True)
        worker._launch()  # calls wait in its backlog until the loop runs: never blocks
        return worker

    def _release(self, _pending: Pending[Any]) -> None:
        """Done callback of a worker's call: put the worker back into the idle pool."""
        self._submit(self._go_idle)

    def _go_idle(self) -> None:
        if self._closed or self._idle_scope is None:
            return
        # Not `anyio.current_time()`: this may run in a loop callback, where AnyIO cannot
        # detect asyncio; both clocks below are the ones AnyIO's deadlines use.
        now = asyncio.get_running_loop().time() if self._backend == "asyncio" else _trio_time()
        with _registry_lock:
            self._idle_since = now
            _idle_workers.setdefault(self._backend, []).append(self)
        self._idle_scope.deadline = now + self.worker_idle_timeout

    async def _retire_when_idle(self) -> None:
        """Watch the worker's idle deadline (moved by `_go_idle`) and stop it when it passes."""
        while True:
            assert self._idle_scope is not None
            with self._idle_scope:
                await anyio.sleep_forever()
            now = anyio.current_time()
            with _registry_lock:
                idle = self in _idle_workers.get(self._backend, [])
                deadline = self._idle_since + self.worker_idle_timeout if idle else math.inf
                if now >= deadline:
                    _idle_workers[self._backend].remove(self)
            if now >= deadline:
                self.stop()
                return
            self._idle_scope = anyio.CancelScope(deadline=deadline)


def get_caller(name: str | None = None) -> Caller:
    """Return the caller called `name`, or the current thread's caller if `name` is None.

    Raises:
        KeyError: No caller has that name.
        RuntimeError: `name` is None and this thread runs no caller.
    """
    return Caller() if name is None else Caller.get_instance(name)
