"""Worker callers: the pool of threads behind `Caller.to_thread`.

`Caller.to_thread` runs each call at once on an idle worker of the caller's backend, and starts
a new worker when none is idle. When its call ends a worker goes back to the pool; one that
stays idle for `Caller.worker_idle_timeout` seconds retires, and its thread ends.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
from contextvars import copy_context
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio

from async_kernel.callers._caller import Caller
from async_kernel.callers._pending import Pending

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.abc import TaskGroup

    from async_kernel.callers._caller import Backend

__all__ = ("Worker",)

T = TypeVar("T")

# The idle workers by backend, the most recently idle last.
_idle_workers: dict[str, list[Worker]] = {}
_idle_lock = threading.Lock()
_worker_ids = itertools.count(1)


def _trio_time() -> float:
    import trio

    return trio.current_time()


class Worker(Caller):
    """A caller on its own thread that runs `to_thread` calls, one at a time, for the pool."""

    __slots__ = ("_idle_scope", "_idle_since")

    _idle_scope: anyio.CancelScope | None
    _idle_since: float

    @classmethod
    def run_call(
        cls,
        backend: Backend,
        func: Callable[..., T | Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Pending[T]:
        """Run `func(*args, **kwargs)` as a task on an idle worker of `backend`, or on a new one.

        Never blocks: a new worker takes the call once its loop runs.
        """
        worker = cls._take(backend)
        pending: Pending[T] = Pending(func, worker)
        # Added before the call can finish, so it runs in the worker's thread as the call ends.
        pending.add_done_callback(worker._release)
        worker._dispatch(pending, worker._spawn, copy_context(), (pending, func, args, kwargs), 0.0)
        return pending

    @classmethod
    def _take(cls, backend: Backend) -> Worker:
        with _idle_lock:
            idle = _idle_workers.setdefault(backend, [])
            while idle:
                worker = idle.pop()
                if not worker._closed:
                    return worker
        name = f"async_kernel_worker_{next(_worker_ids)}"
        worker = cls._create(name, backend, protected=False)
        worker._launch()  # calls wait in its backlog until the loop runs: never blocks
        return worker

    @classmethod
    def _create(cls, name: str, backend: Backend, *, protected: bool) -> Self:
        self = super()._create(name, backend, protected=protected)
        self._idle_scope = None
        self._idle_since = 0.0
        return self

    def _activate(self, tg: TaskGroup) -> None:
        """Serve calls like any caller, and retire once idle for too long."""
        # Created here, in the loop: `_go_idle` may set its deadline before the watcher task
        # first runs.
        self._idle_scope = anyio.CancelScope()
        super()._activate(tg)
        tg.start_soon(self._retire_when_idle)

    @classmethod
    def stop_all(cls) -> None:
        """Stop every worker, idle or busy (at shutdown)."""
        for caller in cls.all_callers(running_only=False):
            if isinstance(caller, Worker):
                caller.stop(force=True)

    def stop(self, *, force: bool = False) -> None:
        """Leave the pool, stop accepting calls and cancel what runs; the thread then ends."""
        super().stop(force=force)
        with _idle_lock:
            idle = _idle_workers.get(self._backend, [])
            if self in idle:
                idle.remove(self)

    def _release(self, _pending: Pending[Any]) -> None:
        """Done callback of a worker's call: put the worker back into the idle pool."""
        self._submit(self._go_idle)

    def _go_idle(self) -> None:
        if self._closed or self._idle_scope is None:
            return
        # Not `anyio.current_time()`: this may run in a loop callback, where AnyIO cannot
        # detect asyncio; both clocks below are the ones AnyIO's deadlines use.
        now = asyncio.get_running_loop().time() if self._backend == "asyncio" else _trio_time()
        with _idle_lock:
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
            with _idle_lock:
                idle = self in _idle_workers.get(self._backend, [])
                deadline = self._idle_since + self.worker_idle_timeout if idle else math.inf
                if now >= deadline:
                    _idle_workers[self._backend].remove(self)
            if now >= deadline:
                self.stop()
                return
            self._idle_scope = anyio.CancelScope(deadline=deadline)
