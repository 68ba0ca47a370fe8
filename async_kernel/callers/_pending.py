"""A pending result: thread-safe, awaitable from any thread and backend, blockable in sync code.

A `Pending` is what every `Caller` method returns. It is completed exactly once (the first
of `set_result`, `set_exception` and `set_cancelled` wins) by the code that runs the call, and
can be waited on with `await pending` (asyncio or trio, in any thread), `pending.result(timeout)`
or `pending.wait(timeout)` from plain threads, or observed with done callbacks.
"""

from __future__ import annotations

import enum
import logging
import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    import aiologic

    from async_kernel.callers._caller import Caller

__all__ = ("Pending", "PendingCancelled")

T = TypeVar("T")

_log = logging.getLogger(__name__)

# One lock for every Pending: the critical sections are a few attribute writes, so sharing
# it costs less than allocating a lock per Pending on the hot path.
_lock = threading.Lock()


class PendingCancelled(Exception):
    """Raised by `await`, `result()` and `exception()` of a `Pending` that was cancelled."""


class _State(enum.IntEnum):
    """The life cycle of a `Pending`."""

    pending = 0
    """Not finished yet (possibly not even started)."""
    result = 1
    """Finished with a value."""
    exception = 2
    """Finished with an exception."""
    cancelled = 3
    """Cancelled before or while running."""


class Pending(Generic[T]):
    """The eventual result of a call made through a `Caller`.

    Thread-safe: it may be awaited, waited on, cancelled and completed from any thread. Awaiting
    works in asyncio and trio alike (through an `aiologic.Event`, created only when someone
    actually has to wait).
    """

    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_caller",
        "_cancel_msg",
        "_cancel_requested",
        "_canceller",
        "_event",
        "_func",
        "_state",
        "_value",
    )

    def __init__(self, func: object = None, caller: Caller | None = None) -> None:
        """Create an unfinished pending.

        Args:
            func: The callable whose result this is (only used in the `repr`).
            caller: The caller that will run it; waiting synchronously on its own thread
                would deadlock, so `result()` refuses to.
        """
        self._func = func
        self._caller = caller
        self._state = _State.pending
        self._value: Any = None
        self._callbacks: list[Callable[[Pending[T]], object]] | None = None
        self._event: aiologic.Event | None = None
        self._canceller: Callable[[], object] | None = None
        self._cancel_requested = False
        self._cancel_msg: str | None = None

    def __repr__(self) -> str:
        func = self._func
        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
        caller = f" caller={self._caller.name}" if self._caller is not None else ""
        return f"<Pending {name} {self._state.name}{caller}>"

    # -- inspection ------------------------------------------------------------------------

    @property
    def caller(self) -> Caller | None:
        """The caller that runs (or ran) the call, if known."""
        return self._caller

    def done(self) -> bool:
        """Return True once finished: with a result, an exception, or cancelled."""
        return self._state is not _State.pending

    def cancelled(self) -> bool:
        """Return True if it was cancelled."""
        return self._state is _State.cancelled

    def result(self, timeout: float | None = None) -> T:
        """Return the result, blocking the current thread until it is done.

        Args:
            timeout: Seconds to wait at most; None waits as long as it takes.

        Raises:
            TimeoutError: It did not finish within `timeout`.
            PendingCancelled: It was cancelled.
            RuntimeError: Called on the thread of the caller that runs it while not done
                (waiting would deadlock that caller's loop); `await` it instead.
            BaseException: Whatever the call raised.
        """
        self._block(timeout)
        return self._outcome()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Return the exception the call raised (None if it returned), blocking until done.

        Raises:
            TimeoutError: It did not finish within `timeout`.
            PendingCancelled: It was cancelled.
            RuntimeError: As for `result()`.
        """
        self._block(timeout)
        if self._state is _State.cancelled:
            raise PendingCancelled(self._value)
        return self._value if self._state is _State.exception else None

    def wait(self, timeout: float | None = None) -> bool:
        """Block the current thread until done or `timeout` passes; return `done()`.

        Raises:
            RuntimeError: As for `result()`.
        """
        if self._state is _State.pending:
            if timeout is None or timeout > 0:  # a zero timeout only polls: no deadlock
                self._check_not_own_thread()
            event = self._get_event()
            if event is not None:
                event.wait(timeout)
        return self._state is not _State.pending

    def __await__(self) -> Generator[Any, Any, T]:
        """Wait without blocking the loop (asyncio or trio, any thread) and return the result."""
        if self._state is _State.pending:
            event = self._get_event()
            if event is not None:
                yield from event.__await__()
        return self._outcome()

    # -- callbacks -------------------------------------------------------------------------

    def add_done_callback(self, fn: Callable[[Pending[T]], object]) -> None:
        """Call `fn(self)` when done: at once if it already is, else in the completing thread.

        Callbacks run before waiters wake up. An exception raised by `fn` is logged, never
        propagated.
        """
        with _lock:
            if self._state is _State.pending:
                if self._callbacks is None:
                    self._callbacks = [fn]
                else:
                    self._callbacks.append(fn)
                return
        self._run_callback(fn)

    def remove_done_callback(self, fn: Callable[[Pending[T]], object]) -> int:
        """Remove every registration of `fn`; return how many were removed."""
        with _lock:
            if not self._callbacks:
                return 0
            kept = [cb for cb in self._callbacks if cb != fn]
            removed = len(self._callbacks) - len(kept)
            self._callbacks = kept
        return removed

    # -- cancellation ----------------------------------------------------------------------

    def cancel(self, msg: str | None = None) -> bool:
        """Cancel the call: at once if it has not started, else by cancelling its running work.

        A call that runs is cancelled at its next checkpoint (its `finally` blocks run) and
        then reports `cancelled()`; one that finishes before the cancellation reaches it is
        reported cancelled too.

        Args:
            msg: A message for the `PendingCancelled` raised to whoever waits.

        Returns:
            False if it was already done, else True.
        """
        callbacks, event = None, None
        with _lock:
            if self._state is not _State.pending:
                return False
            canceller = self._canceller
            if canceller is None:
                # Not started: the runner will find it done and skip it.
                callbacks, event = self._finish(_State.cancelled, msg)
            else:
                self._cancel_requested = True
                self._cancel_msg = msg
        if canceller is None:
            self._notify(callbacks, event)
        else:
            canceller()
        return True

    # -- completion (for callers) ----------------------------------------------------------

    def set_canceller(self, fn: Callable[[], object] | None) -> bool:
        """Mark the call as started; `fn` (if any) is what `cancel()` calls to stop it.

        For callers: call it just before running the work, and skip the work if it returns
        False (the pending was cancelled before it started).
        """
        with _lock:
            if self._state is not _State.pending:
                return False
            self._canceller = fn
            return True

    @property
    def cancel_requested(self) -> bool:
        """True once `cancel()` asked running work to stop (for callers)."""
        return self._cancel_requested

    def set_result(self, value: T) -> bool:
        """Finish with `value`, unless already done; return whether this call finished it."""
        return self._complete(_State.result, value)

    def set_exception(self, exc: BaseException) -> bool:
        """Finish with `exc`, unless already done; return whether this call finished it."""
        return self._complete(_State.exception, exc)

    def set_cancelled(self, msg: str | None = None) -> bool:
        """Finish as cancelled, unless already done; return whether this call finished it.

        Args:
            msg: The message; defaults to the one given to `cancel()`.
        """
        return self._complete(_State.cancelled, msg if msg is not None else self._cancel_msg)

    # -- internals -------------------------------------------------------------------------

    def _complete(self, state: _State, value: object) -> bool:
        with _lock:
            if self._state is not _State.pending:
                return False
            callbacks, event = self._finish(state, value)
        self._notify(callbacks, event)
        return True

    def _finish(
        self, state: _State, value: object
    ) -> tuple[list[Callable[[Pending[T]], object]] | None, aiologic.Event | None]:
        # Called with `_lock` held.
        self._state = state
        self._value = value
        self._canceller = None
        callbacks, self._callbacks = self._callbacks, None
        return callbacks, self._event

    def _notify(
        self, callbacks: list[Callable[[Pending[T]], object]] | None, event: aiologic.Event | None
    ) -> None:
        # Callbacks first: bookkeeping they do (e.g. a worker going back to its pool) is then
        # visible to whoever wakes up from waiting.
        if callbacks:
            for fn in callbacks:
                self._run_callback(fn)
        if event is not None:
            event.set()

    def _run_callback(self, fn: Callable[[Pending[T]], object]) -> None:
        try:
            fn(self)
        except Exception:
            _log.exception("Done callback %r of %r failed", fn, self)

    def _get_event(self) -> aiologic.Event | None:
        """Return the event to wait on, or None if already done."""
        with _lock:
            if self._state is not _State.pending:
                return None
            if self._event is None:
                import aiologic  # imported on the first wait: it costs ~50 ms at start-up

                self._event = aiologic.Event()
            return self._event

    def _check_not_own_thread(self) -> None:
        caller = self._caller
        if caller is not None and caller.ident == threading.get_ident():
            msg = (
                f"{self!r} runs on this thread's caller: blocking here would deadlock it. "
                "Use `await pending` instead."
            )
            raise RuntimeError(msg)

    def _block(self, timeout: float | None) -> None:
        if self._state is _State.pending and not self.wait(timeout):
            msg = f"{self!r} did not finish within {timeout} seconds"
            raise TimeoutError(msg)

    def _outcome(self) -> T:
        match self._state:
            case _State.result:
                return self._value
            case _State.exception:
                raise self._value
            case _State.cancelled:
                raise PendingCancelled(self._value)
            case _:
                msg = f"{self!r} is not done"
                raise RuntimeError(msg)
