"""`input()` and `getpass()` over the stdin channel, from any thread."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from IPython.core.error import StdinNotImplementedError

from async_kernel.output._routing import current_parent

if TYPE_CHECKING:
    from collections.abc import Callable

    from async_kernel.wire._outbox import Outbox
    from async_kernel.wire._session import Message

__all__ = ("InputReplyError", "StdinBroker")


class InputReplyError(ValueError):
    """The client answered an input request with a malformed `input_reply`."""


class _Waiter:
    __slots__ = ("error", "event", "value")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: str = ""
        self.error: str | None = None


class StdinBroker:
    """Sends `input_request`s to the client of the current request and waits for the reply.

    Args:
        outbox: Sends the input requests.
        flush: Sends buffered output first, so that the prompt follows what was printed.
    """

    def __init__(self, outbox: Outbox, flush: Callable[[], None]) -> None:
        self._outbox = outbox
        self._flush = flush
        self._waiters: dict[str, _Waiter] = {}

    def request(self, prompt: str = "", *, password: bool = False) -> str:
        """Ask the client for a line of input; blocks the calling thread until it answers.

        Raises:
            StdinNotImplementedError: The request came from a client that does not allow stdin.
            KeyboardInterrupt: The kernel was interrupted while waiting.
            InputReplyError: The client's answer was malformed.
        """
        job = current_parent()
        if job is None or not job.content.get("allow_stdin", False):
            # ipykernel's words: clients (nbclient's tests among them) compare them.
            caller = "getpass" if password else "raw_input"
            msg = f"{caller} was called, but this frontend does not support input requests."
            raise StdinNotImplementedError(msg)
        waiter = _Waiter()
        self._flush()
        # Registered before the request leaves, so that a fast reply finds its waiter.
        msg_id = self._outbox.session.new_msg_id()
        self._waiters[msg_id] = waiter
        self._outbox.input_request(job, str(prompt), password=password, msg_id=msg_id)
        try:
            # Short waits, so that an interrupt delivered to this thread is raised promptly.
            while not waiter.event.wait(0.05):
                pass
        finally:
            self._waiters.pop(msg_id, None)
        if waiter.error is not None:
            raise InputReplyError(waiter.error)
        return waiter.value

    def on_reply(self, msg: Message) -> None:
        """Hand an `input_reply` to the thread that waits for it (called on the I/O thread)."""
        parent_id = msg.parent_header.get("msg_id")
        waiter = self._waiters.get(parent_id) if isinstance(parent_id, str) else None
        if waiter is None and len(self._waiters) == 1:
            waiter = next(iter(self._waiters.values()))  # a client that sent no parent header
        if waiter is None:
            return
        # JupyterLab and jupyter_console send the value with or without a `status`.
        value = msg.content.get("value", "")
        if msg.problem is not None:
            waiter.error = f"the input_reply is malformed: {msg.problem}"
        elif not isinstance(value, str):
            waiter.error = f"the input_reply's value must be a string, not {value!r:.40}"
        else:
            waiter.value = value
        waiter.event.set()

    def input(self, prompt: object = "") -> str:
        """The kernel's `builtins.input`."""
        return self.request(str(prompt), password=False)

    def getpass(self, prompt: str = "Password: ", stream: Any = None) -> str:
        """The kernel's `getpass.getpass`."""
        return self.request(prompt, password=True)
