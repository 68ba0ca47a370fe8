"""ipykernel's session and socket API on the kernel's own wire.

Notebooks and libraries written for ipykernel build messages with `kernel.session` (there a
jupyter_client `Session`) and send them on `kernel.iopub_socket`:

```python
kernel = get_ipython().kernel
kernel.session.send(kernel.iopub_socket, "display_data", content, parent=ip.parent_header)
```

Here `kernel.session` is a `KernelSession`: the wire `Session` plus jupyter_client's `msg`,
`msg_header` and `send`. `kernel.iopub_socket` is a `KernelSocket`, a stand-in that hands what
is sent to the `Outbox` (which signs, frames and queues it for the socket thread), so it can be
used from any thread. Parents are taken in every form ipykernel takes them: a message dict
(`get_parent()`), a header dict, or a `Job`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import zmq

from async_kernel._enums import Channel
from async_kernel.wire._frames import Frame, frame_of
from async_kernel.wire._job import Job
from async_kernel.wire._json import dumps
from async_kernel.wire._session import Message, Session

if TYPE_CHECKING:
    from collections.abc import Sequence

    from async_kernel.wire._outbox import Outbox

__all__ = (
    "KernelSession",
    "KernelSocket",
    "ParentMessage",
    "extract_header",
    "job_for",
    "parent_message",
)

log = logging.getLogger("async_kernel")

_DONE = zmq.MessageTracker()
"""A tracker that is already done: what jupyter_client's `send` returns for untracked sends."""


class ParentMessage(dict[str, Any]):
    """A request as ipykernel hands it to user code (a message dict) that remembers its `Job`.

    Given back to `set_parent`, `set_thread_parent` or `session.send`, it stands for the very
    request it came from, with the identities that `input()` needs to reach its client.
    """

    __slots__ = ("job",)

    def __init__(self, job: Job) -> None:
        super().__init__(job.msg.to_dict())
        self.job = job
        """The request."""


def parent_message(job: Job | None) -> dict[str, Any]:
    """Return `job` as ipykernel's API returns a parent: a message dict, or `{}` for none."""
    return {} if job is None else ParentMessage(job)


def extract_header(parent: Mapping[str, Any] | Job | None) -> dict[str, Any]:
    """Return the header of a parent given as a message dict, a header dict or a `Job`.

    Raises:
        KeyError: `parent` is a non-empty mapping with neither `header` nor `msg_id`.
    """
    if parent is None:
        return {}
    if isinstance(parent, Job):
        return dict(parent.msg.header)
    if not parent:
        return {}
    if "header" in parent:
        return dict(parent["header"])
    if "msg_id" in parent:
        return dict(parent)
    msg = "a parent is a message dict (with 'header') or a header dict (with 'msg_id')"
    raise KeyError(msg)


def job_for(
    parent: Mapping[str, Any] | Job | None,
    *,
    ident: bytes | Sequence[bytes] | None = None,
    channel: Channel = Channel.shell,
) -> Job | None:
    """Return the `Job` that output with `parent` as its parent belongs to.

    A `ParentMessage` gives back its own job; any other message or header dict becomes a job of
    its own (for `input()` to reach a client from it, pass the client's `ident`).

    Args:
        parent: A message dict, a header dict, a `Job`, or None / `{}` for no parent.
        ident: The ROUTER identities of the client that sent `parent`.
        channel: The channel `parent` arrived on.
    """
    if isinstance(parent, Job):
        return parent
    if isinstance(parent, ParentMessage) and ident is None:
        return parent.job
    header = extract_header(parent)
    if not header or parent is None:
        return None
    whole: Mapping[str, Any] = parent if "header" in parent else {}
    message = Message(
        header=header,
        parent_header=dict(whole.get("parent_header") or {}),
        metadata=dict(whole.get("metadata") or {}),
        content=dict(whole.get("content") or {}),
        idents=_idents(ident),
        raw_header=dumps(header),
    )
    subshell_id = header.get("subshell_id")
    return Job(message, channel, subshell_id=subshell_id if isinstance(subshell_id, str) else None)


def _idents(ident: bytes | str | Sequence[bytes | str] | None) -> list[bytes]:
    """The routing identities as jupyter_client takes them: one, a list, or none."""
    if ident is None:
        return []
    items = [ident] if isinstance(ident, bytes | str) else list(ident)
    return [i.encode() if isinstance(i, str) else bytes(i) for i in items]


def _as_frames(buffers: Sequence[Any]) -> list[Frame]:
    """The buffers as frames; each must support the buffer protocol, as zmq requires."""
    frames: list[Frame] = []
    for buffer in buffers:
        try:
            frames.append(frame_of(buffer))
        except TypeError as e:
            kind = type(buffer).__name__
            msg = f"buffers must support the buffer protocol (bytes, memoryview, ...), not {kind}"
            raise TypeError(msg) from e
    return frames


class KernelSocket:
    """A stand-in for one of the kernel's sockets, where ipykernel's API hands out a socket.

    Messages given to `KernelSession.send` with this socket go through the `Outbox`; frames
    given to `send_multipart` must already be signed and framed. Both are queued for the socket
    thread, so they can be sent from any thread.

    Args:
        channel: The channel whose socket this stands for.
        outbox: Signs, frames and queues the messages.
    """

    def __init__(self, channel: Channel, outbox: Outbox) -> None:
        self.channel = channel
        """The channel whose socket this stands for."""
        self._outbox = outbox

    def send_message(
        self, msg: Mapping[str, Any], idents: list[bytes], buffers: list[Frame]
    ) -> None:
        """Queue a message given as a dict (header, parent_header, metadata, content)."""
        self._outbox.send_message(self.channel, msg, idents=idents, buffers=buffers)

    def send_multipart(self, msg_parts: Sequence[Any], *args: Any, **kwargs: Any) -> None:
        """Queue frames that are already signed and framed (zmq's flags and options are ignored)."""
        self._outbox.send_frames(self.channel, _as_frames(msg_parts))

    def __repr__(self) -> str:
        return f"<KernelSocket {self.channel.value}>"


class KernelSession(Session):
    """The kernel's session, with jupyter_client's API for building and sending messages."""

    def __init__(self, key: bytes, **kwargs: Any) -> None:
        super().__init__(key, **kwargs)
        self.pid = os.getpid()
        """The process that may send: as jupyter_client, a forked child does not."""

    @property
    def session(self) -> str:
        """The session id (jupyter_client's name for it)."""
        return self.session_id

    def msg_header(self, msg_type: str) -> dict[str, Any]:
        """Return a new header for `msg_type`."""
        return self.header(msg_type)

    def msg(
        self,
        msg_type: str,
        content: dict[str, Any] | None = None,
        parent: Mapping[str, Any] | Job | None = None,
        header: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Return a new message as a dict, as jupyter_client's `Session.msg` does.

        Args:
            msg_type: The message type.
            content: The content.
            parent: The message it answers: a message dict, a header dict or a `Job`.
            header: The header to use instead of a new one.
            metadata: The metadata.
        """
        parent_header = extract_header(parent)
        if header is None:
            subshell_id = parent_header.get("subshell_id")
            extra = {"subshell_id": subshell_id} if isinstance(subshell_id, str) else {}
            header = self.header(msg_type, **extra)
        return {
            "header": header,
            "msg_id": header["msg_id"],
            "msg_type": header["msg_type"],
            "parent_header": parent_header,
            "content": {} if content is None else content,
            "metadata": dict(metadata or {}),
        }

    def send(
        self,
        stream: Any,
        msg_or_type: dict[str, Any] | str,
        content: dict[str, Any] | None = None,
        parent: Mapping[str, Any] | Job | None = None,
        ident: bytes | Sequence[bytes] | None = None,
        buffers: Sequence[Any] | None = None,
        track: bool = False,
        header: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Build a message (or take one given as a dict) and send it on `stream`.

        As jupyter_client's `Session.send`. A `KernelSocket` (`kernel.iopub_socket`) sends
        through the outbox, from any thread; any other object with `send_multipart` (a zmq
        socket the caller owns) is given the signed frames; with `stream=None` nothing is sent.

        Args:
            stream: Where to send.
            msg_or_type: The message type, or a whole message dict to send as it is.
            content: The content (for a new message).
            parent: The message it answers (for a new message).
            ident: Routing identities (for iopub: the topic).
            buffers: Binary buffers to append.
            track: Accepted for jupyter_client's signature; sends are never tracked.
            header: The header to use (for a new message).
            metadata: The metadata (for a new message).

        Returns:
            The message as a dict, or None when called in a forked child.

        Raises:
            TypeError: A buffer does not support the buffer protocol.
        """
        if isinstance(msg_or_type, dict):
            msg = msg_or_type
            buffers = buffers or msg.get("buffers") or []
        else:
            msg = self.msg(msg_or_type, content, parent, header, metadata)
        if os.getpid() != self.pid:
            log.warning("not sending a message from a forked process: %s", msg.get("msg_type"))
            return None
        frames = _as_frames(buffers or [])
        idents = _idents(ident)
        if isinstance(stream, KernelSocket):
            stream.send_message(msg, idents, frames)
        elif stream is not None:
            parts = {
                k: msg.get(k) or {} for k in ("header", "parent_header", "metadata", "content")
            }
            stream.send_multipart(self.encode(parts, idents) + frames)
        msg["tracker"] = _DONE
        return msg
