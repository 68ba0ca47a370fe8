"""A job: one received request on its way through the kernel, and the current one."""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from async_kernel.enums import Channel, RunMode
    from async_kernel.session import Message

__all__ = ("Job", "current_job", "get_job")


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
    state: dict[str, Any] = field(default_factory=dict[str, Any])
    """Per-request scratch space for handlers (e.g. the execution count, payloads)."""

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

    def __repr__(self) -> str:
        mode = self.run_mode.value if self.run_mode else "?"
        sub = f" subshell={self.subshell_id}" if self.subshell_id else ""
        return f"<Job {self.msg_type} {self.msg.msg_id} {self.channel.value}/{mode}{sub}>"


current_job: contextvars.ContextVar[Job | None] = contextvars.ContextVar("job", default=None)
"""The request the current context works for; copied into tasks, threads and caller calls."""


def get_job() -> Job | None:
    """Return the request that the current code runs for, or None outside any request."""
    return current_job.get()
