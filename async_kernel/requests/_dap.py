"""The Debug Adapter Protocol: responses, arguments, and the connection to debugpy's adapter.

DAP messages are JSON bodies behind a `Content-Length: N` header and a blank line. The client
renumbers the requests it forwards (several frontends may use the same `seq`), matches each
response to its request by `request_seq`, and hands events to a callback. One reader thread,
hidden from the debugger, owns the receiving side of the socket; any thread may send.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any

import orjson

from async_kernel._threads import hide_from_debugger

if TYPE_CHECKING:
    from collections.abc import Callable

    import aiologic

__all__ = (
    "DapClient",
    "DapClosedError",
    "DebugRequestError",
    "argument",
    "as_reply",
    "dap_response",
    "encode_message",
    "error_response",
    "split_messages",
)

log = logging.getLogger("async_kernel")

_HEADER = b"Content-Length: "
_SEPARATOR = b"\r\n\r\n"


def dap_response(request: dict[str, Any], success: bool = True, **fields: Any) -> dict[str, Any]:
    """The DAP response to `request` (its `seq` and `command`), with `fields` added."""
    seq = request.get("seq", 0)
    command = request.get("command", "")
    return {
        "type": "response",
        "seq": seq,
        "request_seq": seq,
        "command": command,
        "success": success,
        **fields,
    }


def error_response(request: dict[str, Any], message: str) -> dict[str, Any]:
    """A failed DAP response to `request` that says why in `message`."""
    return dap_response(
        request, False, message=message, body={"error": {"id": 1, "format": message}}
    )


def as_reply(response: dict[str, Any]) -> dict[str, Any]:
    """A DAP response as `debug_reply` content: with the `status` every reply carries.

    DAP clients read `success`, `body` and `message`; a failure also gets `ename` and
    `evalue`, as every error reply of the kernel.
    """
    if response.get("success"):
        return {**response, "status": "ok"}
    message = response.get("message")
    evalue = message if isinstance(message, str) else "the debug request failed"
    return {**response, "status": "error", "ename": "DebugRequestError", "evalue": evalue}


class DebugRequestError(Exception):
    """A debug request that cannot be answered: the message says why (and what to do)."""


def argument(request: dict[str, Any], name: str, kind: type) -> Any:
    """Return a required argument of `request`, checking its type."""
    value = (request.get("arguments") or {}).get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        msg = f"{request.get('command')} needs the argument {name!r} ({kind.__name__})"
        raise DebugRequestError(msg)
    return value


class DapClosedError(ConnectionError):
    """The connection to the debug adapter is closed (or was never opened)."""


def encode_message(message: dict[str, Any]) -> bytes:
    """Frame one DAP message: the `Content-Length` header, a blank line, the JSON body."""
    body = orjson.dumps(message)
    return _HEADER + str(len(body)).encode("ascii") + _SEPARATOR + body


def split_messages(buffer: bytearray) -> list[dict[str, Any]]:
    """Take every complete message off the front of `buffer` (what is left stays in it).

    Raises:
        ValueError: The buffer does not start with a DAP header.
    """
    messages: list[dict[str, Any]] = []
    while True:
        end = buffer.find(_SEPARATOR)
        if end < 0:
            return messages
        length: int | None = None
        for line in bytes(buffer[:end]).split(b"\r\n"):
            if line.startswith(_HEADER):
                length = int(line[len(_HEADER) :])
        if length is None:
            msg = f"not a DAP header: {bytes(buffer[:end])[:80]!r}"
            raise ValueError(msg)
        start = end + len(_SEPARATOR)
        if len(buffer) < start + length:
            return messages
        messages.append(orjson.loads(bytes(buffer[start : start + length])))
        del buffer[: start + length]


class _Waiter:
    """A response that a request waits for, from any thread or loop."""

    __slots__ = ("done", "response")

    def __init__(self) -> None:
        import aiologic  # imported when first needed: it costs ~20 ms at start-up

        self.done: aiologic.Event = aiologic.Event()
        self.response: dict[str, Any] | None = None


class DapClient:
    """A connection to a debug adapter at `(host, port)`.

    Args:
        on_event: Called with each DAP event, in the reader thread (it must not block).
        on_close: Called once when the connection ends, in the reader thread.
    """

    def __init__(
        self,
        on_event: Callable[[dict[str, Any]], None],
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._on_event = on_event
        self._on_close = on_close
        self._seq = itertools.count(1)
        self._waiting: dict[int, _Waiter] = {}
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._ended: aiologic.Event | None = None
        self.response_timeout = 30.0
        """Seconds `request` waits for a response (debugpy may wait for the debuggee)."""

    @property
    def connected(self) -> bool:
        """Whether the connection is open."""
        return self._sock is not None

    def connect(self, host: str, port: int, timeout: float = 10.0) -> None:
        """Connect to the adapter and start reading.

        Raises:
            OSError: The adapter cannot be reached.
        """
        import aiologic

        sock = socket.create_connection((host, port), timeout=timeout)
        sock.settimeout(None)
        self._sock = sock
        self._ended = aiologic.Event()
        self._reader = threading.Thread(
            target=self._read, args=(sock,), name="async_kernel_debug_adapter", daemon=True
        )
        hide_from_debugger(self._reader)
        self._reader.start()

    async def wait_closed(self, timeout: float) -> bool:  # noqa: ASYNC109 - a bounded courtesy
        """Wait until the adapter closed the connection (it does after `disconnect`)."""
        import anyio

        ended = self._ended
        if ended is None:
            return True
        with anyio.move_on_after(timeout):
            await ended
        return ended.is_set()

    def close(self) -> None:
        """Close the connection; requests still waiting fail with `DapClosedError`."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._fail_waiting()

    def _send(self, message: dict[str, Any]) -> _Waiter:
        sock = self._sock
        if sock is None:
            raise DapClosedError("the debugger is not connected to debugpy")
        waiter = _Waiter()
        with self._lock:
            seq = next(self._seq)
            self._waiting[seq] = waiter
            try:
                sock.sendall(encode_message({**message, "seq": seq, "type": "request"}))
            except OSError as e:
                del self._waiting[seq]
                raise DapClosedError(f"could not send to debugpy: {e}") from e
        return waiter

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request (its `seq` is replaced) and return the adapter's response.

        The response's `request_seq` and `seq` are the caller's `seq` again.

        Raises:
            DapClosedError: The connection is closed, or closed before the response came.
            TimeoutError: No response within `response_timeout` seconds.
        """
        import anyio

        waiter = self._send(message)
        with anyio.fail_after(self.response_timeout):
            await waiter.done
        return self._response(message, waiter)

    def request_sync(self, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """`request` for a plain thread: block until the response comes.

        Raises:
            DapClosedError: The connection is closed, or closed before the response came.
            TimeoutError: No response within `timeout` seconds.
        """
        waiter = self._send(message)
        if not waiter.done.wait(timeout):
            msg = f"debugpy did not answer {message.get('command')!r} within {timeout} s"
            raise TimeoutError(msg)
        return self._response(message, waiter)

    @staticmethod
    def _response(request: dict[str, Any], waiter: _Waiter) -> dict[str, Any]:
        response = waiter.response
        if response is None:
            raise DapClosedError("the connection to debugpy closed before it answered")
        seq = request.get("seq", 0)
        return {**response, "seq": seq, "request_seq": seq}

    def _read(self, sock: socket.socket) -> None:
        buffer = bytearray()
        try:
            while chunk := sock.recv(65536):
                buffer += chunk
                for message in split_messages(buffer):
                    self._dispatch(message)
        except (OSError, ValueError) as e:
            if self._sock is sock:
                log.warning("the connection to debugpy failed: %s", e)
        finally:
            if self._sock is sock:
                self._sock = None
                sock.close()
            self._fail_waiting()
            if self._ended is not None:
                self._ended.set()
            if self._on_close is not None:
                self._on_close()

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "response":
            with self._lock:
                waiter = self._waiting.pop(message.get("request_seq", -1), None)
            if waiter is None:
                log.debug("a response from debugpy that nobody waits for: %r", message)
                return
            waiter.response = message
            waiter.done.set()
        elif kind == "event":
            try:
                self._on_event(message)
            except Exception:
                log.exception("handling the debug event %r failed", message.get("event"))
        else:
            log.debug("ignored a %r message from debugpy", kind)

    def _fail_waiting(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            waiter.done.set()
