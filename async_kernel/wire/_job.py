"""A job: one received request on its way through the kernel, and the current one."""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from async_kernel._enums import Channel, RunMode
    from async_kernel.wire._session import Message

__all__ = ("ExecuteState", "Job", "current_job", "error_content", "get_job")

_CANCELLED_NAMES = frozenset({"CancelledError", "Cancelled"})
"""Exception names of asyncio's and trio's cancellation, which an interrupt shows up as."""


def error_content(
    ename: str, evalue: str = "", traceback: list[str] | None = None
) -> dict[str, Any]:
    """Return the error fields of a reply or an `error` message: ename, evalue, traceback."""
    return {"ename": ename, "evalue": evalue, "traceback": traceback or []}


@dataclass(slots=True, eq=False)
class ExecuteState:
    """What one execute request gathers while it runs, read by the handler that replies."""

    count: int
    """The cell's execution count."""
    metadata: dict[str, Any] = field(default_factory=dict[str, Any])
    """The reply's metadata (`started`, `status`, ...)."""
    suppress_error: bool = False
    """Tag `suppress-error`: an error becomes a short notice and the reply says `ok`."""
    interrupted: bool = False
    """An interrupt (or the cell's timeout) was delivered to this cell."""
    timeout: float | None = None
    """The cell's timeout in seconds, once it has expired."""
    error: dict[str, Any] | None = None
    """The error content IPython showed for the cell, if any."""
    result: Any = None
    """IPython's `ExecutionResult` of the cell."""
    payload: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    """Payloads for the reply (pager, set_next_input, ask_exit)."""

    def interrupt_error(self) -> dict[str, Any]:
        """Return how this cell's interrupt is reported: `TimeoutError` or `KeyboardInterrupt`."""
        if self.timeout is not None:
            return error_content(
                "TimeoutError",
                f"the cell ran longer than its timeout of {self.timeout:g} s",
                [f"TimeoutError: cell timed out after {self.timeout:g} s"],
            )
        return error_content("KeyboardInterrupt", "", ["KeyboardInterrupt"])

    def shows_as_interrupt(self, ename: str) -> bool:
        """Whether an error called `ename` is reported as this cell's interrupt instead."""
        return self.interrupted and (ename in _CANCELLED_NAMES or self.timeout is not None)

    def shown_error(self, content: dict[str, Any]) -> dict[str, Any]:
        """Record the error IPython shows for the cell and return what to publish.

        A cancellation (asyncio's or trio's) caused by an interrupt, and any error of a cell
        whose timeout expired, is reported as the interrupt instead.
        """
        if self.shows_as_interrupt(content["ename"]):
            content = self.interrupt_error()
        self.error = content
        return content

    def outcome(self, *, cancelled: bool) -> tuple[dict[str, Any] | None, bool]:
        """Return the cell's error content (None if it succeeded) and whether to publish it.

        Args:
            cancelled: The cell's cancel scope caught a cancellation (it ended at an await).
        """
        if self.interrupted:
            if cancelled or self.error is None:
                return self.interrupt_error(), True
            return self.error, False
        result = self.result
        if result is None:  # the cell never produced a result: it was stopped
            return self.interrupt_error(), False
        if result.success:
            return None, False
        if self.error is not None:
            return self.error, False
        exc = result.error_in_exec or result.error_before_exec
        return error_content(type(exc).__name__, str(exc)), False


@dataclass(slots=True, eq=False)
class Job:
    """A request as the kernel handles it: the message plus where it came from and how it runs."""

    msg: Message
    """The decoded request."""
    channel: Channel
    """The channel (socket) it arrived on."""
    subshell_id: str | None = None
    """The subshell it is for (`header.subshell_id`), or None for the main shell."""
    run_mode: RunMode | None = None
    """The mode the dispatcher chose."""
    received: float = field(default_factory=time.monotonic)
    """`time.monotonic()` when it was received."""
    seq: int = 0
    """Arrival order within its shell or subshell, used to abort queued requests."""
    reject: dict[str, Any] | None = None
    """The error (`error_content`) that refuses the request without running it, if it is refused:
    an unknown type or subshell, a malformed message."""
    execute: ExecuteState | None = None
    """The state of an execute request, from when its handler starts."""
    after_reply: Callable[[], object] | None = None
    """Called once the reply and `idle` are queued (a shutdown stops the kernel there)."""

    @property
    def ident(self) -> list[bytes]:
        """The ROUTER identities to reply to."""
        return self.msg.idents

    @property
    def msg_type(self) -> str:
        """The request's `msg_type`."""
        return self.msg.msg_type

    @property
    def content(self) -> dict[str, Any]:
        """The request's content."""
        return self.msg.content

    @property
    def tags(self) -> list[str]:
        """The cell's tags (`metadata.tags`), the strings only."""
        tags = self.msg.metadata.get("tags")
        if not isinstance(tags, list):
            return []
        return [t for t in tags if isinstance(t, str)]  # pyright: ignore[reportUnknownVariableType]

    def __repr__(self) -> str:
        mode = self.run_mode.value if self.run_mode else "?"
        sub = f" subshell={self.subshell_id}" if self.subshell_id else ""
        return f"<Job {self.msg_type} {self.msg.msg_id} {self.channel.value}/{mode}{sub}>"


current_job: contextvars.ContextVar[Job | None] = contextvars.ContextVar("job", default=None)
"""The request the current context works for; copied into tasks, threads and caller calls."""


def get_job() -> Job | None:
    """Return the request that the current code runs for, or None outside any request."""
    return current_job.get()
