"""Callers: one per thread that runs an AnyIO event loop, and the way to hand it work from anywhere.

`Caller()` is the current thread's caller. `Caller.start_new()` starts a loop on a new thread;
`async with Caller.attach():` turns an already running loop into a caller. Every scheduling
method can be called from any thread, never blocks, copies the caller's contextvars into the
work and returns a `Pending`. The machinery that hands calls to the loop and runs them is the
base class, `scheduler.Scheduler`; the worker callers behind `to_thread` are in `workers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import threading
from collections import deque
from contextvars import copy_context
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

import anyio

from async_kernel._enums import Backend
from async_kernel.callers._pending import Pending
from async_kernel.callers._scheduler import Scheduler

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

    from anyio.abc import TaskGroup, TaskStatus

    from async_kernel.callers._workers import Worker

__all__ = ("Caller", "get_caller")

T = TypeVar("T")

_log = logging.getLogger(__name__)

# The live callers by thread ident.
_registry: dict[int, Caller] = {}
_registry_lock = threading.Lock()
_caller_ids = itertools.count(1)


def _current_backend() -> Backend:
    """Return the backend of the loop running in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return "trio"
    return "asyncio"


@functools.cache
def _worker_class() -> type[Worker]:
    """Return `Worker`, imported on first use: it subclasses `Caller`, so `workers` imports us."""
    from async_kernel.callers._workers import Worker

    return Worker


class Caller(Scheduler):
    """Runs calls on one thread's event loop; the methods that schedule work are thread-safe."""

    __slots__ = ("_name", "_protected", "_ready", "_running", "_thread")

    _name: str
    _protected: bool
    _running: bool
    _thread: threading.Thread | None
    _ready: threading.Event | None

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
    def _create(cls, name: str, backend: Backend, *, protected: bool) -> Self:
        self = object.__new__(cls)
        self._init_scheduler(backend)
        self._name = name
        self._protected = protected
        self._thread = None
        self._running = False
        self._ready = None
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
        caller = cls._create(name, backend, protected=protected)
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
        caller = cls._create(name or thread_name, _current_backend(), protected=protected)
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
                self._activate(tg)
                task_status.started()
                if self._ready is not None:
                    self._ready.set()
                try:
                    await anyio.sleep_forever()
                finally:
                    # However the loop ends, the calls' asyncio tasks end first (see `_drain`).
                    self._closed = True
                    self._cancel_all()
                    with anyio.CancelScope(shield=True):
                        await self._drain()
        finally:
            self._deactivate()

    def _activate(self, tg: TaskGroup) -> None:
        """Register the caller of this thread and serve calls in `tg`, on its running loop."""
        ident = threading.get_ident()
        with _registry_lock:
            if ident in _registry:
                msg = f"Thread {threading.current_thread().name!r} already runs a Caller."
                raise RuntimeError(msg)
            _registry[ident] = self
        self._thread = threading.current_thread()
        # Before the backlog runs: a `call_direct` waiting in it may ask whether it runs.
        self._running = True
        self._bind_loop(tg)

    def _deactivate(self) -> None:
        """Stop accepting calls, unregister and cancel the calls still waiting for the loop."""
        self._closed = True
        self._running = False
        with _registry_lock:
            if _registry.get(threading.get_ident()) is self:
                del _registry[threading.get_ident()]
        self._unbind_loop()

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
        self._submit(self._cancel_all)

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
        return _worker_class().run_call(self._backend, func, args, kwargs)


def get_caller(name: str | None = None) -> Caller:
    """Return the caller called `name`, or the current thread's caller if `name` is None.

    Raises:
        KeyError: No caller has that name.
        RuntimeError: `name` is None and this thread runs no caller.
    """
    return Caller() if name is None else Caller.get_instance(name)
