"""ipykernel's `Kernel` methods for the current request, which libraries call on our kernel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from async_kernel._enums import Channel
from async_kernel.output import _routing as routing
from async_kernel.wire._ipykernel import job_for, parent_message
from async_kernel.wire._job import current_job

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from async_kernel.wire._ipykernel import KernelSession
    from async_kernel.wire._job import Job

__all__ = ("IpykernelAPI",)


class IpykernelAPI:
    """`get_parent`, `set_parent` and `send_response` as ipykernel's kernel has them (a mixin).

    The class it is mixed into provides `session`.
    """

    session: KernelSession

    def get_parent(self, channel: str | None = None) -> dict[str, Any]:
        """Return the request that output produced here belongs to, as a message dict.

        `{}` when there is none. `channel` is accepted for ipykernel's signature: the request
        is the current context's, whichever channel it came on.
        """
        return parent_message(routing.current_parent())

    def set_parent(
        self,
        ident: bytes | Sequence[bytes] | None,
        parent: Mapping[str, Any] | Job | None,
        channel: str = "shell",
    ) -> None:
        """Send the output (and `input()`) of the current context to `parent` from now on.

        Args:
            ident: The ROUTER identities of `parent`'s client (where input requests go).
            parent: A message dict (`get_parent()`), a header dict or a `Job`.
            channel: The channel `parent` came on.
        """
        current_job.set(job_for(parent, ident=ident, channel=Channel(channel)))

    def send_response(
        self,
        stream: Any,
        msg_or_type: dict[str, Any] | str,
        content: dict[str, Any] | None = None,
        ident: bytes | Sequence[bytes] | None = None,
        buffers: Sequence[Any] | None = None,
        track: bool = False,
        header: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        channel: str | None = None,
    ) -> dict[str, Any] | None:
        """Send a message whose parent is the current request (`session.send` with `get_parent`)."""
        return self.session.send(
            stream,
            msg_or_type,
            content,
            self.get_parent(channel),
            ident,
            buffers,
            track,
            header,
            metadata,
        )
