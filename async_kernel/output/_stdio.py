"""The kernel's stdout and stderr: two `OutStream`s, and the capture of fds 1 and 2 into them."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from async_kernel.output._streams import FDCapture, OutStream

if TYPE_CHECKING:
    from collections.abc import Callable

    from async_kernel.wire._job import Job

__all__ = ("StdIO",)

log = logging.getLogger("async_kernel")


class StdIO:
    """The streams that replace `sys.stdout` and `sys.stderr`, and the fd captures behind them.

    Args:
        publish: Publishes a run of stream text (`publish(name, text, parent)`).
        flush_interval: Seconds that stream output is gathered before it is sent.
        capture_fds: Also capture what is written to the descriptors 1 and 2 (POSIX).
        fd_parent: Returns the parent of captured fd output when it can tell (else routing).
    """

    def __init__(
        self,
        publish: Callable[[str, str, Job | None], None],
        *,
        flush_interval: float,
        capture_fds: bool,
        fd_parent: Callable[[], Job | None],
    ) -> None:
        self.stdout = OutStream("stdout", publish, flush_interval=flush_interval)
        """The kernel's `sys.stdout`."""
        self.stderr = OutStream("stderr", publish, flush_interval=flush_interval)
        """The kernel's `sys.stderr`."""
        self._capture_fds = capture_fds and os.name == "posix"
        self._fd_parent = fd_parent
        self._captures: list[FDCapture] = []

    def start(self, log_level: str) -> None:
        """Capture fds 1 and 2 (if asked) and send the kernel's own log to the original stderr.

        Args:
            log_level: The level of the kernel's log (`async_kernel` logger).
        """
        log_stream: Any = sys.__stderr__
        if self._capture_fds:
            log_stream = self._capture() or log_stream
        handler = logging.StreamHandler(log_stream)
        handler.setFormatter(
            logging.Formatter("[async-kernel %(levelname)s %(asctime)s] %(message)s")
        )
        log.addHandler(handler)
        log.setLevel(log_level)
        log.propagate = False

    def _capture(self) -> Any:
        """Capture fds 1 and 2; return a stream on the original fd 2, if it was captured."""
        log_stream: Any = None
        for fd, stream, original in (
            (1, self.stdout, sys.__stdout__),
            (2, self.stderr, sys.__stderr__),
        ):
            if original is not None:
                original.flush()  # what Python buffered goes out before the fd is taken
            capture = FDCapture(fd, stream, parent=self._fd_parent)
            try:
                capture.start()
            except OSError:
                log.exception("could not capture fd %d; its output is not captured", fd)
                continue
            self._captures.append(capture)
            if fd == 2 and capture.original_fd is not None:
                log_stream = os.fdopen(os.dup(capture.original_fd), "w", buffering=1)
        return log_stream

    def flush(self) -> None:
        """Send all buffered output now, including what was written to the captured fds."""
        for capture in self._captures:
            capture.drain()
        self.stdout.flush()
        self.stderr.flush()

    def stop(self) -> None:
        """Send what is left and give the fds back."""
        self.flush()
        for capture in self._captures:
            capture.stop()
        self._captures.clear()
        self.stdout.flush()
        self.stderr.flush()
