"""The comm port of the Enterprise Gateway launcher: signals and shutdown for the kernel.

Enterprise Gateway reaches a kernel it launched elsewhere through the launcher's *comm port*,
a TCP port the launcher reported with the connection info. Each request is one connection
that carries one JSON object and is then closed:

- `{"signum": N}` sends signal N to the kernel; `0` is the gateway's poll, every few seconds,
  which only asks whether the launcher still listens. SIGINT goes to the launcher's process
  group when the launcher leads it (the launcher ignores it), as a local frontend interrupts:
  the kernel's cells and the processes they started are interrupted together;
- `{"shutdown": 1}` ends the kernel (SIGTERM: a clean stop, then SIGKILL if it lingers) and,
  with it, the launcher.

The launcher stops listening the moment the kernel process is gone, so the gateway's next
poll is refused and it sees the kernel dead. `CommListener` does all this on the launcher's
main thread, with one selector over the listening socket, the open requests and the kernel
process (a pidfd where Linux has one, a short poll elsewhere).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

__all__ = ("CommListener",)

log = logging.getLogger("async_kernel.gateway_launcher")

_REQUEST_LIMIT = 64 * 1024  # bytes of one request; the gateway's are a few dozen
_REQUEST_TIMEOUT = 5.0  # seconds a connection may take to deliver its request
_POLL_INTERVAL = 0.2  # seconds between looks at the kernel where there is no pidfd


class CommListener:
    """Serves the comm port for one kernel process until that process has ended.

    Args:
        sock: The comm port's socket, bound and listening.
        kernel: The kernel process the requests are for.
        shutdown_timeout: Seconds a shutdown request waits for the kernel to stop after
            SIGTERM before it sends SIGKILL.
    """

    def __init__(
        self, sock: socket.socket, kernel: subprocess.Popen[bytes], *, shutdown_timeout: float
    ) -> None:
        self.sock = sock
        self.kernel = kernel
        self.shutdown_timeout = shutdown_timeout
        self._kill_at: float | None = None
        self._open: dict[socket.socket, tuple[bytearray, float]] = {}

    def serve(self) -> int:
        """Serve requests until the kernel has exited; close the port; return its exit code."""
        selector = selectors.DefaultSelector()
        self.sock.setblocking(False)
        selector.register(self.sock, selectors.EVENT_READ)
        pidfd = _pidfd(self.kernel.pid)
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ)
        try:
            while self.kernel.poll() is None:
                for key, _ in selector.select(self._timeout(pidfd is None)):
                    if key.fileobj is self.sock:
                        self._accept(selector)
                    elif isinstance(key.fileobj, socket.socket):
                        self._read(selector, key.fileobj)
                self._expire(selector)
        finally:
            # Closed before anything else: the gateway's next poll is refused at once.
            self.sock.close()
            for conn in list(self._open):
                self._close(selector, conn)
            if pidfd is not None:
                os.close(pidfd)
            selector.close()
        return self.kernel.wait()

    def shutdown(self) -> None:
        """Stop the kernel: SIGTERM now, SIGKILL if it still runs `shutdown_timeout` later."""
        if self._kill_at is None:
            self._kill_at = time.monotonic() + self.shutdown_timeout
        self.signal(signal.SIGTERM)

    def signal(self, signum: int) -> None:
        """Send `signum` to the kernel, unless it has exited."""
        if self.kernel.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.kernel.pid, signum)

    def interrupt(self) -> None:
        """SIGINT to the kernel and the processes its cells started (they share its group)."""
        if os.getpgid(0) == os.getpid() and self.kernel.poll() is None:
            os.killpg(os.getpid(), signal.SIGINT)  # the launcher's own handler ignores it
        else:  # a group that others share (a container's shell): the kernel alone
            self.signal(signal.SIGINT)

    # --- requests ----------------------------------------------------------------------------

    def _accept(self, selector: selectors.BaseSelector) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.warning("could not accept a connection on the comm port: %s", e)
            return
        conn.setblocking(False)
        self._open[conn] = (bytearray(), time.monotonic() + _REQUEST_TIMEOUT)
        selector.register(conn, selectors.EVENT_READ)

    def _read(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        data, _ = self._open[conn]
        try:
            chunk = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.warning("a comm port connection failed: %s", e)
            self._close(selector, conn)
            return
        data += chunk
        request = _parse(data)
        if request is None and chunk and len(data) <= _REQUEST_LIMIT:
            return  # more to come (the gateway closes its end once it has sent)
        self._close(selector, conn)
        if request is None:
            log.warning("ignored a comm port request that is not a JSON object: %r", bytes(data))
        else:
            self._handle(request)

    def _handle(self, request: dict[str, object]) -> None:
        signum = request.get("signum")
        if signum is not None:
            if not isinstance(signum, int) or isinstance(signum, bool) or signum < 0:
                log.warning("ignored a comm port request with a bad signum: %r", request)
            elif signum > 0:  # 0 is the gateway's poll: answering it is the reply
                log.info("forwarding signal %d to the kernel", signum)
                try:
                    if signum == signal.SIGINT:
                        self.interrupt()
                    else:
                        self.signal(signum)
                except (OSError, ValueError) as e:
                    log.warning("could not send signal %d to the kernel: %s", signum, e)
        if request.get("shutdown"):
            log.info("shutdown requested: stopping the kernel")
            self.shutdown()

    def _close(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        selector.unregister(conn)
        del self._open[conn]
        conn.close()

    # --- time --------------------------------------------------------------------------------

    def _timeout(self, polling: bool) -> float | None:
        deadlines = [deadline for _, deadline in self._open.values()]
        if self._kill_at is not None:
            deadlines.append(self._kill_at)
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        if polling:
            timeout = _POLL_INTERVAL if timeout is None else min(timeout, _POLL_INTERVAL)
        return timeout

    def _expire(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for conn, (_, deadline) in list(self._open.items()):
            if now >= deadline:
                log.warning("a comm port connection sent no complete request in time")
                self._close(selector, conn)
        if self._kill_at is not None and now >= self._kill_at:
            log.warning("the kernel still runs %g s after SIGTERM: SIGKILL", self.shutdown_timeout)
            self._kill_at = None
            self.signal(signal.SIGKILL)


def _parse(data: bytes | bytearray) -> dict[str, object] | None:
    """The request in `data` if it is a complete JSON object, else None."""
    try:
        request = json.loads(data)
    except ValueError:  # half a request, or not JSON
        return None
    return request if isinstance(request, dict) else None


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when process `pid` ends (Linux 5.3+), or None."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return pidfd_open(pid)
    except OSError:
        return None
