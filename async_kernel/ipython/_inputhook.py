"""Running a GUI toolkit's input hook on the main thread while the main event loop waits.

An input hook (IPython's name, after `PyOS_InputHook`) runs a GUI toolkit's own event loop
until the descriptor of the context it is given turns readable. `HookRunner` gives it such a
context. A watcher thread waits in its place for what would have ended the event loop's wait:
the loop's own wait descriptor (the epoll or kqueue descriptor of its I/O wait, readable once
any of the loop's sockets is, including the one other threads wake it with), the time the loop
meant to sleep, and the signal wake-up socket. When one of them fires, the watcher makes the
context readable, the toolkit's loop returns, and the event loop goes on as if its own wait had
just ended.
"""

from __future__ import annotations

import logging
import select
import selectors
import socket
import threading
import time
from typing import TYPE_CHECKING

from async_kernel._threads import hide_from_debugger

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("HookContext", "HookRunner")

log = logging.getLogger("async_kernel")

BUSY_INTERVAL = 0.05
"""Seconds an event loop that never waits (always has work ready) runs between GUI turns."""
BUSY_SLICE = 0.002
"""Seconds the GUI gets in such a turn."""
POLL_SLICE = 0.01
"""Seconds the GUI runs at a time when the loop's wait descriptor is not known."""


def _socketpair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of non-blocking sockets (selectable on every platform)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def _drain(sock: socket.socket) -> bool:
    """Read everything waiting on `sock`; whether there was anything."""
    got = False
    while True:
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return got
        except OSError:  # closed
            return got
        if not data:
            return got
        got = True


def _poke(sock: socket.socket) -> None:
    """Make the peer of `sock` readable (a full buffer is readable already)."""
    try:
        sock.send(b"\0")
    except (BlockingIOError, InterruptedError):
        pass


class HookContext:
    """What an input hook is given: its `fileno()` turns readable when the hook must return."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        """The descriptor the hook watches (on platforms where the toolkit can watch one)."""
        return self._sock.fileno()

    def input_is_ready(self) -> bool:
        """Whether the hook must return now (for hooks that poll instead of watching)."""
        return bool(select.select([self._sock], [], [], 0)[0])


class _Watcher:
    """The thread that ends a round of the hook when the loop has work or its time is up.

    One round at a time: `begin` hands it the round, `end` (after the hook returned) cancels
    the round if it still runs and waits until the thread is idle again, so no byte of one
    round can end the next.
    """

    def __init__(self, loop_fd: int | None, wake_sock: socket.socket | None) -> None:
        self.ready, self._ready_w = _socketpair()
        self._cancel, self._cancel_w = _socketpair()
        self._wake_sock = wake_sock
        self._all = selectors.DefaultSelector()
        self._quiet = selectors.DefaultSelector()
        for sel in (self._all, self._quiet):
            sel.register(self._cancel, selectors.EVENT_READ)
        if loop_fd is not None:
            self._all.register(loop_fd, selectors.EVENT_READ)
        if wake_sock is not None:
            self._all.register(wake_sock, selectors.EVENT_READ)
        self._cond = threading.Condition()
        self._round: tuple[selectors.BaseSelector, float | None] | None = None
        self._closed = False
        self._thread = threading.Thread(
            target=self._serve, name="async_kernel_gui_watcher", daemon=True
        )
        hide_from_debugger(self._thread)
        self._thread.start()

    def begin(self, timeout: float | None, *, watch_loop: bool) -> None:
        """Start a round: end it after `timeout` s, or earlier if `watch_loop` and work comes."""
        with self._cond:
            self._round = (self._all if watch_loop else self._quiet, timeout)
            self._cond.notify()

    def end(self) -> bool:
        """End the round; whether it had ended (the context was readable) before the hook did."""
        _poke(self._cancel_w)
        with self._cond:
            self._cond.wait_for(lambda: self._round is None)
        fired = _drain(self.ready)
        _drain(self._cancel)
        if self._wake_sock is not None:
            _drain(self._wake_sock)  # the signal numbers: the handlers run anyway
        return fired

    def wake(self) -> None:
        """Make the context readable now (any thread)."""
        _poke(self._ready_w)

    def close(self) -> None:
        """Stop the thread and close the sockets."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        _poke(self._cancel_w)
        self._thread.join(5)
        for sel in (self._all, self._quiet):
            sel.close()
        for sock in (self.ready, self._ready_w, self._cancel, self._cancel_w):
            sock.close()

    def _serve(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._round is not None or self._closed)
                if self._closed:
                    return
                assert self._round is not None
                selector, timeout = self._round
            try:
                events = selector.select(timeout)
            except OSError:  # the loop closed its descriptor: end the round
                log.debug("GUI watcher: select failed", exc_info=True)
                events = []
            if not any(key.fileobj is self._cancel for key, _ in events):
                _poke(self._ready_w)
            with self._cond:
                self._round = None
                self._cond.notify_all()


class HookRunner:
    """Runs an input hook on the loop's thread whenever that loop would wait.

    `wait(timeout)` is called where the event loop would block for `timeout` seconds; it
    returns how long the loop should still wait itself (0.0 once the loop has work or the
    time is up; the rest, or None for no limit, if the hook returned on its own).
    """

    def __init__(
        self,
        hook: Callable[[HookContext], object],
        *,
        loop_fd: int | None,
        wake_sock: socket.socket | None = None,
        on_failure: Callable[[BaseException], object],
    ) -> None:
        """Start the watcher thread.

        Args:
            hook: The toolkit's input hook.
            loop_fd: The descriptor that is readable while the loop has I/O to handle (None:
                unknown, the hook then runs in slices of `POLL_SLICE` seconds).
            wake_sock: The signal wake-up socket, if it is the runner's to watch.
            on_failure: Called (on the loop's thread) with the exception when the hook fails.
        """
        self.hook = hook
        self._loop_fd = loop_fd
        self._poll: select.poll | None = None
        if loop_fd is not None and hasattr(select, "poll"):
            self._poll = select.poll()
            self._poll.register(loop_fd, select.POLLIN)
        self._watcher = _Watcher(loop_fd, wake_sock)
        self._context = HookContext(self._watcher.ready)
        self._on_failure = on_failure
        self._last_turn = time.monotonic()
        self._closed = False
        self.running = False
        """Whether the hook runs now (the loop then wakes it when work is scheduled)."""

    def wait(self, timeout: float | None) -> float | None:
        """Let the GUI run while the loop would wait `timeout` s; return what is left to wait."""
        if self._closed:
            return timeout
        if timeout is not None and timeout <= 0:
            if time.monotonic() - self._last_turn >= BUSY_INTERVAL:
                self._turn(BUSY_SLICE, watch_loop=False)
            return 0.0
        if self._loop_fd is None:
            self._turn(POLL_SLICE if timeout is None else min(timeout, POLL_SLICE), watch_loop=True)
            return 0.0
        if self._loop_ready():
            return 0.0
        start = time.monotonic()
        if self._turn(timeout, watch_loop=True):
            return 0.0
        return None if timeout is None else max(0.0, timeout - (time.monotonic() - start))

    def wake(self) -> None:
        """End the hook's current run (the loop has new work); harmless when it does not run."""
        if self.running:
            self._watcher.wake()

    def close(self) -> None:
        """Stop the watcher thread; `wait` then returns at once."""
        if not self._closed:
            self._closed = True
            self._watcher.close()

    def _loop_ready(self) -> bool:
        assert self._loop_fd is not None
        if self._poll is not None:
            return bool(self._poll.poll(0))
        return bool(select.select([self._loop_fd], [], [], 0)[0])

    def _turn(self, timeout: float | None, *, watch_loop: bool) -> bool:
        """Run the hook once; whether the watcher (not the hook itself) ended the run."""
        self._watcher.begin(timeout, watch_loop=watch_loop)
        self.running = True
        failure: Exception | None = None
        try:
            self.hook(self._context)
        except Exception as exc:
            failure = exc
        finally:
            self.running = False
            fired = self._watcher.end()
            self._last_turn = time.monotonic()
        if failure is not None:
            self._on_failure(failure)
            return True
        return fired
