"""The vocabularies of the kernel: run modes, concurrency modes, channels and message types."""

from __future__ import annotations

import enum
from typing import Literal, Self, get_args

__all__ = ("BACKENDS", "Backend", "Channel", "KernelConcurrencyMode", "MsgType", "RunMode")

Backend = Literal["asyncio", "trio"]
"""The async libraries an event loop of the kernel can run on."""
BACKENDS: tuple[Backend, ...] = get_args(Backend)
"""The names of the backends, for choices and checks."""


class RunMode(enum.StrEnum):
    """How and where a request is run.

    `str(RunMode.thread)` is `"##thread"`, the first line that selects the mode in a cell;
    `RunMode.get("thread")`, `RunMode.get("##thread")` and `RunMode.get("RunMode.thread")`
    all return `RunMode.thread`.
    """

    blocking = "blocking"
    """Run inline, to completion, before the next message of the same channel is taken."""
    queue = "queue"
    """Run one at a time, in arrival order, on the channel's (or subshell's) caller."""
    task = "task"
    """Run at once as a new task on the channel's (or subshell's) caller."""
    thread = "thread"
    """Run at once on a pooled worker caller, in its own thread and event loop."""

    def __str__(self) -> str:
        return f"##{self.value}"

    @classmethod
    def get(cls, value: object) -> Self | None:
        """Return the mode named by `value` (`thread`, `##thread`, `RunMode.thread`), or None."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            return None
        text = value.strip()
        for prefix in ("##", "RunMode."):
            if text.startswith(prefix):
                text = text.removeprefix(prefix)
                break
        try:
            return cls(text)
        except ValueError:
            return None


class KernelConcurrencyMode(enum.StrEnum):
    """The kernel-wide policy that the dispatcher applies to every request."""

    default = "default"
    """Concurrent: each message type runs in the mode of the default table."""
    blocking = "blocking"
    """Sequential: every request runs blocking, like a classic kernel."""


class Channel(enum.StrEnum):
    """A channel of the Jupyter wire protocol, named as the sockets are."""

    shell = "shell"
    """Requests from the user: execute, complete, inspect, comms and so on."""
    control = "control"
    """Urgent requests: interrupt, shutdown, subshells; served by the control thread."""
    stdin = "stdin"
    """Input requests from the kernel to the client, and their replies."""
    iopub = "iopub"
    """Broadcast of status, output, display and comm messages."""
    heartbeat = "hb"
    """The echo socket that proves the kernel is alive."""


class MsgType(enum.StrEnum):
    """The request types that the kernel handles."""

    kernel_info_request = "kernel_info_request"
    """Ask for the kernel's identity, language and features."""
    execute_request = "execute_request"
    """Run code."""
    complete_request = "complete_request"
    """Ask for completions at a cursor."""
    inspect_request = "inspect_request"
    """Ask for help on the object at a cursor."""
    is_complete_request = "is_complete_request"
    """Ask whether code is ready to run."""
    history_request = "history_request"
    """Ask for past input and output."""
    comm_info_request = "comm_info_request"
    """List the open comms."""
    comm_open = "comm_open"
    """A client opens a comm."""
    comm_msg = "comm_msg"
    """A message for an open comm."""
    comm_close = "comm_close"
    """A client closes a comm."""
    interrupt_request = "interrupt_request"
    """Interrupt the running code."""
    shutdown_request = "shutdown_request"
    """Stop (or restart) the kernel."""
    debug_request = "debug_request"
    """A Debug Adapter Protocol request."""
    create_subshell_request = "create_subshell_request"
    """Create a subshell (JEP 91)."""
    delete_subshell_request = "delete_subshell_request"
    """Delete a subshell (JEP 91)."""
    list_subshell_request = "list_subshell_request"
    """List the subshells (JEP 91)."""
    input_reply = "input_reply"
    """The client's answer to an input request, on stdin."""
