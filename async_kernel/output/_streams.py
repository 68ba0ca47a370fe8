"""Output streams: `sys.stdout` / `sys.stderr` replacements that batch text per cell.

`OutStream.write` only appends `(parent, text)` to a buffer; one shared flusher thread publishes
the buffer a short interval after its first write, `OutStream.flush` publishes it at once, and a
buffer that grows past its limit is published by the writer. `FDCapture` feeds text written at
the file-descriptor level (C extensions, `os.system`, subprocesses) into a stream.
"""

from __future__ import annotations

import codecs
import collections
import io
import itertools
import logging
import operator
import os
import select
import struct
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Literal

from async_kernel._threads import hide_from_debugger
from async_kernel.output._routing import current_parent, output_to

if TYPE_CHECKING:
    from collections.abc import Callable

    from async_kernel.wire._job import Job

__all__ = ("FDCapture", "OutStream")

logger = logging.getLogger("async_kernel")

if sys.platform != "win32":
    import fcntl
    import termios


class _Flusher:
    """One daemon thread that publishes every stream's buffer when its deadline passes."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.due: dict[OutStream, float] = {}
        self.thread: threading.Thread | None = None

    def schedule(self, stream: OutStream, delay: float) -> None:
        """Flush `stream` after `delay` seconds (or earlier, if it is already due sooner)."""
        deadline = time.monotonic() + delay
        with self.cond:
            if self.due.get(stream, deadline) < deadline:
                return
            self.due[stream] = deadline
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name="OutStream flusher", daemon=True
                )
                hide_from_debugger(self.thread)
                self.thread.start()
            self.cond.notify()

    def _run(self) -> None:
        while True:
            with self.cond:
                while True:
                    now = time.monotonic()
                    due = [stream for stream, deadline in self.due.items() if deadline <= now]
                    if due:
                        for stream in due:
                            del self.due[stream]
                        break
                    # Idle (no timeout) when nothing is buffered anywhere.
                    self.cond.wait(min(self.due.values()) - now if self.due else None)
            for stream in due:
                try:
                    stream.flush()
                except Exception:
                    logger.exception("Timed flush of %s failed", stream.name)


_flusher = _Flusher()
_streams: weakref.WeakSet[OutStream] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The child has no flusher thread, its locks may be held by threads that no longer exist,
    # and the buffered text belongs to the parent, which publishes it: start afresh.
    global _flusher
    _flusher = _Flusher()
    for stream in list(_streams):
        stream._reset()  # pyright: ignore[reportPrivateUsage]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class OutStream(io.TextIOBase):
    """A text stream published in batches: one `publish` per run of text with the same parent.

    Args:
        name: The stream name used in `stream` messages.
        publish: Called as `publish(name, text, parent)` once per run of consecutive text with the
            same parent (compared by identity), in write order, never from two threads at once.
        flush_interval: Seconds from the first write into an empty buffer to its timed flush.
        max_buffer: Characters after which the writer flushes the buffer at once.
    """

    def __init__(
        self,
        name: Literal["stdout", "stderr"],
        publish: Callable[[str, str, Job | None], None],
        *,
        flush_interval: float = 0.1,
        max_buffer: int = 1 << 20,
    ) -> None:
        super().__init__()
        self.stream_name: Literal["stdout", "stderr"] = name
        """The stream name used in `stream` messages."""
        self.original_fd: int | None = None
        """A duplicate of the captured descriptor (set by `FDCapture`), returned by `fileno`."""
        self._publish = publish
        self._flush_interval = flush_interval
        self._max_buffer = max_buffer
        self._closed = False
        self._reset()
        _streams.add(self)

    def _reset(self) -> None:
        # Writers take no lock: `deque.append` is atomic, and the `_armed` flag is cleared before
        # a flush takes the buffer, so a write either lands in that flush or arms a new one.
        self._buffer: collections.deque[tuple[Job | None, str]] = collections.deque()
        self._size = 0  # approximate under contention; only used for `max_buffer`
        self._armed = False
        # Reentrant: a signal handler may flush in the main thread while it holds the lock.
        self._publish_lock = threading.RLock()
        self._in_flush = False

    @property
    def name(self) -> str:
        """`<stdout>` or `<stderr>`, like the standard streams."""
        return f"<{self.stream_name}>"

    encoding: str = "utf-8"
    """Always `utf-8`."""

    def writable(self) -> bool:
        """Return True."""
        return True

    def isatty(self) -> bool:
        """Return False: the frontend is not a terminal."""
        return False

    def fileno(self) -> int:
        """Return the captured original descriptor (see `FDCapture`).

        Raises:
            io.UnsupportedOperation: When no descriptor of this stream is captured.
        """
        if self.original_fd is None:
            msg = f"{self.name} has no file descriptor; start an FDCapture to give it one"
            raise io.UnsupportedOperation(msg)
        return self.original_fd

    def write(self, s: str, /) -> int:
        """Buffer `s` for the current parent; callable from any thread.

        Returns:
            The number of characters written.

        Raises:
            TypeError: If `s` is not a str.
            ValueError: If the stream is closed.
        """
        if not isinstance(s, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            msg = f"write() argument must be str, not {type(s).__name__}"
            raise TypeError(msg)
        if self._closed:
            msg = f"I/O operation on closed stream {self.name}"
            raise ValueError(msg)
        n = len(s)
        if not n:
            return 0
        self._buffer.append((current_parent(), s))
        self._size += n
        if not self._armed:
            self._armed = True
            _flusher.schedule(self, self._flush_interval)
        if self._size > self._max_buffer:
            self.flush()
        return n

    def flush(self) -> None:
        """Publish everything buffered now, in this thread, before returning.

        A flush started from inside `publish` (or a signal handler interrupting a flush) returns
        at once; its text goes out with the timed flush.
        """
        with self._publish_lock:
            if self._in_flush:
                return
            self._in_flush = True
            try:
                self._armed = False
                popleft = self._buffer.popleft
                items = list(itertools.starmap(popleft, itertools.repeat((), len(self._buffer))))
                self._size = 0
                # Jobs compare by identity (`eq=False`), so `groupby` splits where `is` would.
                runs = itertools.groupby(items, key=operator.itemgetter(0))
                for parent, group in runs:
                    text = "".join(map(operator.itemgetter(1), group))
                    try:
                        self._publish(self.stream_name, text, parent)
                    except Exception:
                        logger.exception(
                            "Publishing %d characters of %s failed", len(text), self.name
                        )
            finally:
                self._in_flush = False

    def close(self) -> None:
        """Flush, then refuse further writes."""
        if not self._closed:
            self.flush()
            self._closed = True
        super().close()

    def __repr__(self) -> str:
        return f"<OutStream {self.stream_name} buffered={self._size}>"


# click keeps ANSI colours on a stream that is not a terminal only when its class comes from an
# `ipykernel.` module (that is how it knows a notebook renders them); ipykernel's class has this
# name and module.
OutStream.__module__ = "ipykernel.iostream"


class FDCapture:
    """Send what is written to a file descriptor into an `OutStream` (POSIX only).

    Args:
        fd: The descriptor to capture, usually 1 or 2.
        stream: The stream that receives the decoded text.
        echo: Also write the raw bytes to the original descriptor.
        parent: Returns the request that captured text belongs to, when it can tell (None
            leaves it to the routing rules: the reader thread is a plain thread).
    """

    def __init__(
        self,
        fd: int,
        stream: OutStream,
        *,
        echo: bool = False,
        parent: Callable[[], Job | None] | None = None,
    ) -> None:
        self.fd = fd
        """The captured descriptor."""
        self.stream = stream
        """The stream that receives the text."""
        self.echo = echo
        """Whether the raw bytes are also written to `original_fd`."""
        self.parent = parent
        """Chooses the parent of captured text (see Args)."""
        self.original_fd: int | None = None
        """A duplicate of the descriptor as it was before `start` (the kernel logs there)."""
        self._read_fd = -1
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._bytes_read = 0
        self._bytes_done = 0

    @property
    def running(self) -> bool:
        """Whether the reader thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Redirect the descriptor into a pipe and start the reader thread.

        Raises:
            RuntimeError: If the capture is already started.
        """
        if sys.platform == "win32":
            logger.info("Output at the file-descriptor level is not captured on Windows")
            return
        if self._thread is not None:
            msg = f"FDCapture of fd {self.fd} is already started; stop() it first"
            raise RuntimeError(msg)
        self.original_fd = os.dup(self.fd)
        self._read_fd, write_fd = os.pipe()
        self._wake_r, self._wake_w = os.pipe()
        os.dup2(write_fd, self.fd)
        os.close(write_fd)
        self.stream.original_fd = self.original_fd
        self._thread = threading.Thread(
            target=self._run, name=f"FDCapture fd {self.fd}", daemon=True
        )
        hide_from_debugger(self._thread)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Restore the descriptor and end the reader thread once it has read what is left.

        Args:
            timeout: Seconds to wait for writers that still hold the pipe (children started
                during the capture) before the reader thread is told to stop anyway.
        """
        if self._thread is None or self.original_fd is None:
            return
        # Restoring drops our write end: the reader sees end-of-file once no child holds it.
        os.dup2(self.original_fd, self.fd)
        self._thread.join(timeout)
        if self._thread.is_alive():
            os.write(self._wake_w, b"x")
            self._thread.join()
        for fd in (self._read_fd, self._wake_r, self._wake_w, self.original_fd):
            os.close(fd)
        if self.stream.original_fd == self.original_fd:
            self.stream.original_fd = None
        self._thread = self.original_fd = None
        self._read_fd = self._wake_r = self._wake_w = -1

    def drain(self, timeout: float = 1.0) -> bool:
        """Wait until everything written to the descriptor so far has reached the stream.

        Cheap when the pipe is empty: one ioctl, no wait.

        Returns:
            True when caught up, False if `timeout` seconds passed first.
        """
        if sys.platform == "win32" or self._thread is None:
            return True
        with self._cond:
            # Reads happen under the same lock, so the pipe and the counter agree.
            unread = fcntl.ioctl(self._read_fd, termios.FIONREAD, b"\0\0\0\0")  # pyright: ignore[reportPossiblyUnboundVariable]
            target = self._bytes_read + struct.unpack("i", unread)[0]
            return self._cond.wait_for(lambda: self._bytes_done >= target, timeout)

    def _run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        poller = select.poll()
        poller.register(self._read_fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r in ready:
                os.set_blocking(self._read_fd, False)
            with self._cond:
                try:
                    data = os.read(self._read_fd, 1 << 16)
                except BlockingIOError:
                    data = b""
                self._bytes_read += len(data)
            if data and self.echo:
                self._echo(data)
            try:
                if text := decoder.decode(data, final=not data):
                    job = self.parent() if self.parent is not None else None
                    if job is None:
                        self.stream.write(text)
                    else:
                        with output_to(job):
                            self.stream.write(text)
            except Exception:
                logger.exception("Captured output of fd %d could not be written", self.fd)
            with self._cond:
                self._bytes_done += len(data)
                self._cond.notify_all()
            if not data:
                return

    def _echo(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view and self.original_fd is not None:
                view = view[os.write(self.original_fd, view) :]
        except OSError:
            logger.exception("Echoing captured output of fd %d failed", self.fd)
            self.echo = False

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<FDCapture fd={self.fd} {state} -> {self.stream.name}>"
