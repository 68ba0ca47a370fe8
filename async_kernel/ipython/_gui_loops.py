"""The main event loop's side of GUI integration, on asyncio and on trio.

* asyncio: the kernel builds its main loop with `main_loop_options`, a selector event loop
  whose selector (`HookSelector`) hands each wait to the attached `HookRunner`. With nothing
  attached, `select` is the plain selector's and the loop is an ordinary selector loop.
* trio: an instrument whose `before_io_wait` runs the hook. Once the hook returns, trio's own
  wait finds the work ready, or is woken with `run_sync_soon` when the time ran out. Removed,
  nothing of it is left in trio's loop.

`attach(hook)` attaches a runner to the loop of this thread; `LoopHook.detach()` takes it away.
"""

from __future__ import annotations

import asyncio
import logging
import selectors
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from _typeshed import FileDescriptorLike

    from async_kernel._enums import Backend
    from async_kernel.ipython._inputhook import HookContext, HookRunner

__all__ = (
    "HookSelector",
    "InputHookEventLoop",
    "LoopHook",
    "attach",
    "detach_all",
    "main_loop_options",
)

log = logging.getLogger("async_kernel")

_attached: set[LoopHook] = set()
"""The hooks attached now (the kernel detaches what is left when it stops)."""


class HookSelector(selectors.BaseSelector):
    """A selector whose `select` lets the attached `HookRunner` run the GUI while it waits."""

    def __init__(self, selector: selectors.BaseSelector | None = None) -> None:
        self._selector = selector if selector is not None else selectors.DefaultSelector()
        self.runner: HookRunner | None = None
        """The runner that waits instead of the selector; None for plain waits."""

    def fileno(self) -> int | None:
        """The descriptor of the underlying selector (epoll, kqueue), if it has one."""
        fileno: Callable[[], int] | None = getattr(self._selector, "fileno", None)
        return fileno() if fileno is not None else None

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        """Register `fileobj` with the underlying selector."""
        return self._selector.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        """Unregister `fileobj`."""
        return self._selector.unregister(fileobj)

    def modify(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        """Change what `fileobj` is watched for."""
        return self._selector.modify(fileobj, events, data)

    def get_key(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        """The key of `fileobj`."""
        return self._selector.get_key(fileobj)

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        """The registered file objects and their keys."""
        return self._selector.get_map()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        """Wait up to `timeout` s for I/O; the attached runner's GUI runs during the wait."""
        runner = self.runner
        if runner is not None:
            timeout = runner.wait(timeout)
        return self._selector.select(timeout)

    def close(self) -> None:
        """Close the underlying selector."""
        self._selector.close()


class InputHookEventLoop(asyncio.SelectorEventLoop):
    """The main shell's asyncio loop: a selector loop whose waits can run a GUI input hook."""

    def __init__(self) -> None:
        self.hook_selector = HookSelector()
        """The selector the loop waits in."""
        super().__init__(self.hook_selector)

    def set_runner(self, runner: HookRunner | None) -> None:
        """Let `runner` run its hook while the loop waits (None: plain waits again).

        While a runner is attached, `call_soon` and `call_at` end the hook's current run, so
        that work scheduled by a GUI callback (which runs inside the wait) starts at once.
        The wrappers are instance attributes, gone again with the runner.
        """
        self.hook_selector.runner = runner
        attrs = vars(self)
        attrs.pop("call_soon", None)
        attrs.pop("call_at", None)
        if runner is None:
            return
        plain_soon, plain_at = self.call_soon, self.call_at

        def call_soon(*args: Any, **kwargs: Any) -> asyncio.Handle:
            handle = plain_soon(*args, **kwargs)
            runner.wake()
            return handle

        def call_at(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            handle = plain_at(*args, **kwargs)
            runner.wake()
            return handle

        attrs.update(call_soon=call_soon, call_at=call_at)


def main_loop_options(backend: Backend) -> dict[str, Any]:
    """The `backend_options` of `anyio.run` for the main thread's loop (GUI-ready on asyncio).

    On Windows the asyncio loop stays the default proactor loop (the selector loop there has
    no subprocesses); GUI integration then needs the trio backend.
    """
    if backend == "asyncio" and sys.platform != "win32":
        return {"loop_factory": InputHookEventLoop}
    return {}


class LoopHook:
    """A runner attached to the main event loop; `detach()` undoes every part of it."""

    def __init__(self, runner: HookRunner, undo: list[Callable[[], object]]) -> None:
        self.runner = runner
        """The runner that runs the hook."""
        self._undo = undo

    def detach(self) -> None:
        """Take the runner off the loop, stop its watcher and give back the wake-up fd."""
        _attached.discard(self)
        while self._undo:
            step = self._undo.pop()
            try:
                step()
            except Exception:
                log.exception("undoing GUI loop step %r failed", step)
        self.runner.close()


class _TrioInstrument:
    """Runs the hook in trio's `before_io_wait` (trio takes any object with these methods)."""

    def __init__(self, runner: HookRunner, wake_loop: Callable[[], object]) -> None:
        self._runner = runner
        self._wake_loop = wake_loop

    def before_io_wait(self, timeout: float) -> None:
        """Run the GUI for (up to) the time trio would wait; wake trio if that time is used."""
        left = self._runner.wait(timeout)
        if timeout > 0 and left == 0.0:
            # Trio waits the full `timeout` once this returns. The hook ended because I/O is
            # ready, the time is up or a GUI callback scheduled a task: the wait must not.
            self._wake_loop()

    def task_scheduled(self, task: object) -> None:
        """A task became runnable (maybe by a GUI callback): end the hook's run."""
        self._runner.wake()


def _nothing() -> None:
    pass


def _trio_wait_fd() -> int | None:
    """The descriptor that is readable while trio's I/O wait would return at once."""
    import trio

    current_kqueue: Callable[[], Any] | None = getattr(trio.lowlevel, "current_kqueue", None)
    if current_kqueue is not None:
        return current_kqueue().fileno()
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT  # pyright: ignore[reportPrivateUsage]

        return GLOBAL_RUN_CONTEXT.runner.io_manager._epoll.fileno()  # pyright: ignore[reportAttributeAccessIssue, reportPrivateUsage]
    except (ImportError, AttributeError):  # another platform or trio version: polling it is
        return None


def _take_wakeup_fd() -> tuple[socket.socket, socket.socket] | None:
    """Point the signal wake-up fd at a new socket pair unless one is set already.

    A SIGINT must end the hook: the Python handler runs only once the main thread runs Python
    again. When the loop set a wake-up fd of its own, it watches it (and gets it back).
    """
    read, write = socket.socketpair()
    read.setblocking(False)
    write.setblocking(False)
    previous = signal.set_wakeup_fd(write.fileno(), warn_on_full_buffer=False)
    if previous == -1:
        return read, write
    signal.set_wakeup_fd(previous)
    read.close()
    write.close()
    return None


def _give_back_wakeup_fd(pair: tuple[socket.socket, socket.socket]) -> None:
    current = signal.set_wakeup_fd(-1)
    if current != pair[1].fileno():  # someone set theirs meanwhile: leave it
        signal.set_wakeup_fd(current)
    for sock in pair:
        sock.close()


def detach_all() -> None:
    """Detach every hook still attached (at kernel shutdown: the loop ends plainly)."""
    for hook in list(_attached):
        hook.detach()


def attach(
    hook: Callable[[HookContext], object], *, on_failure: Callable[[BaseException], object]
) -> LoopHook:
    """Run `hook` whenever the event loop of this (the main) thread waits.

    Raises:
        RuntimeError: The loop is not one the kernel built for this (asyncio).
    """
    attached = _attach(hook, on_failure)
    _attached.add(attached)
    return attached


def _attach(
    hook: Callable[[HookContext], object], on_failure: Callable[[BaseException], object]
) -> LoopHook:
    from async_kernel.ipython._inputhook import HookRunner  # only once a GUI is turned on

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    undo: list[Callable[[], object]] = []
    if loop is not None:
        if not isinstance(loop, InputHookEventLoop):
            hint = " (on Windows, use the trio backend)" if sys.platform == "win32" else ""
            msg = (
                "GUI event loops run inside the kernel's main event loop, which async-kernel "
                f"builds for it; this thread's loop is a {type(loop).__name__}{hint}."
            )
            raise RuntimeError(msg)
        wakeup = _take_wakeup_fd()
        runner = HookRunner(
            hook,
            loop_fd=loop.hook_selector.fileno(),
            wake_sock=wakeup[0] if wakeup else None,
            on_failure=on_failure,
        )
        if wakeup is not None:
            undo.append(lambda: _give_back_wakeup_fd(wakeup))
        loop.set_runner(runner)
        undo.append(lambda: loop.set_runner(None))
        return LoopHook(runner, undo)
    import trio

    token = trio.lowlevel.current_trio_token()
    # Trio's wake-up fd (the signal one too) is part of its epoll set: no socket of ours.
    runner = HookRunner(hook, loop_fd=_trio_wait_fd(), on_failure=on_failure)
    instrument = _TrioInstrument(runner, lambda: token.run_sync_soon(_nothing))
    trio.lowlevel.add_instrument(instrument)  # pyright: ignore[reportArgumentType]

    def remove() -> None:
        try:
            trio.lowlevel.remove_instrument(instrument)  # pyright: ignore[reportArgumentType]
        except KeyError:  # trio removed it after it raised
            pass

    undo.append(remove)
    return LoopHook(runner, undo)
