"""The outbox: the one place that signs, frames and queues what the kernel sends.

Replies, iopub messages (status, output, displays, comms) and input requests are built here
and handed to the socket thread, which alone touches the sockets. Every method is callable
from any thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from async_kernel._enums import Channel
from async_kernel.wire._frames import frame_of

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from async_kernel.wire._frames import Frame
    from async_kernel.wire._job import Job
    from async_kernel.wire._session import Session

__all__ = ("ROUTED", "Outbox")

ROUTED: Any = object()
"""The default `parent` of `Outbox.publish`: the parent the output-routing rules find."""


class Outbox:
    """Builds and queues the kernel's outgoing messages.

    Args:
        session: Signs and frames the messages.
        send: Queues frames for a channel's socket (the socket thread sends them).
        default_parent: Returns the parent of output published without an explicit one.
        send_held: Queues frames that go with the calling thread's next `send` (the socket
            thread is woken once for both); `send` when not given.
        send_soon: Queues frames that may wait a moment for others to go with them
            (`SocketHub.send_soon`); `send` when not given.
    """

    def __init__(
        self,
        session: Session,
        send: Callable[[Channel, Sequence[Frame]], None],
        default_parent: Callable[[], Job | None] = lambda: None,
        send_held: Callable[[Channel, Sequence[Frame]], None] | None = None,
        send_soon: Callable[[Channel, Sequence[Frame]], None] | None = None,
    ) -> None:
        self.session = session
        self._send = send
        self._send_held = send_held or send
        self._send_soon = send_soon or send
        self._default_parent = default_parent
        self._topic = f"kernel.{session.session_id}.".encode()

    @property
    def session_id(self) -> str:
        """The kernel session's id (the `engine` of execute replies)."""
        return self.session.session_id

    def publish(
        self,
        msg_type: str,
        content: dict[str, Any],
        *,
        parent: Job | None = ROUTED,
        metadata: dict[str, Any] | None = None,
        buffers: Sequence[object] | None = None,
        held: bool = False,
        soon: bool = False,
    ) -> None:
        """Publish an iopub message; its parent defaults to the one output routing finds.

        `held`: another message of this thread follows at once and takes this one along.
        `soon`: the message may wait a moment (`SocketHub.send_soon`) for others to go along.
        """
        if parent is ROUTED:
            parent = self._default_parent()
        frames = self.session.serialize(
            msg_type,
            content,
            parent=parent.msg if parent is not None else None,
            metadata=metadata,
            buffers=buffers,
            idents=[self._topic + msg_type.encode()],
            header_extra=_subshell_of(parent),
        )
        send = self._send_held if held else self._send_soon if soon else self._send
        send(Channel.iopub, frames)

    def status(self, job: Job, state: str, *, held: bool = False, soon: bool = False) -> None:
        """Publish `busy` or `idle` for `job`.

        Args:
            job: The request.
            state: `busy` or `idle`.
            held: Another message of this thread follows at once and takes this one along.
            soon: The message may wait a moment for others to go along.
        """
        self.publish("status", {"execution_state": state}, parent=job, held=held, soon=soon)

    def stream(self, name: str, text: str, parent: Job | None) -> None:
        """Publish stream output (`stdout` or `stderr`) for `parent`."""
        self.publish("stream", {"name": name, "text": text}, parent=parent)

    def reply(
        self,
        job: Job,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        *,
        held: bool = False,
    ) -> None:
        """Send a reply to `job` on the socket it came from.

        `held`: another message of this thread (the request's `idle`) follows at once and
        takes this one along.
        """
        frames = self.session.serialize(
            msg_type,
            content,
            parent=job.msg,
            metadata=metadata,
            idents=job.ident,
            header_extra=_subshell_of(job),
        )
        (self._send_held if held else self._send)(job.channel, frames)

    def input_request(self, job: Job, prompt: str, *, password: bool, msg_id: str) -> None:
        """Send an `input_request` with id `msg_id` to the client of `job`."""
        extra: dict[str, Any] = {"msg_id": msg_id, **(_subshell_of(job) or {})}
        frames = self.session.serialize(
            "input_request",
            {"prompt": prompt, "password": password},
            parent=job.msg,
            idents=job.ident,
            header_extra=extra,
        )
        self._send(Channel.stdin, frames)

    def send_message(
        self,
        channel: Channel,
        msg: Mapping[str, Any],
        *,
        idents: list[bytes] | None = None,
        buffers: Sequence[object] | None = None,
    ) -> None:
        """Sign, frame and queue a message built elsewhere, given as jupyter_client's dict.

        `msg` holds `header`, `parent_header`, `metadata` and `content` (what ipykernel's
        `kernel.session.send` builds). On iopub, a message without identities gets the
        kernel's topic for its type.
        """
        parts = {k: msg.get(k) or {} for k in ("header", "parent_header", "metadata", "content")}
        if not idents and channel is Channel.iopub:
            idents = [self._topic + str(parts["header"].get("msg_type", "")).encode()]
        self._send(channel, [*self.session.encode(parts, idents), *map(frame_of, buffers or ())])

    def send_frames(self, channel: Channel, frames: Sequence[Frame]) -> None:
        """Queue frames that are already signed and framed (ipykernel's raw socket API)."""
        self._send(channel, frames)


def _subshell_of(job: Job | None) -> dict[str, Any] | None:
    """The header field that marks a message of a subshell's request, if it is one."""
    if job is None or not job.subshell_id:
        return None
    return {"subshell_id": job.subshell_id}
