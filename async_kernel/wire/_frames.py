"""Moving one message's frames between a zmq socket and Python, copying only what is small.

A message is `[*idents, DELIMITER, signature, header, parent, metadata, content, *buffers]`.
The envelope (everything through the content frame) is small and decoded at once, so it is
received as `bytes`. The buffers may be megabytes (a widget's array, an image): they are
received without a copy, as read-only `memoryview`s of zmq's own memory (what ipykernel hands a
comm handler too), and frames of `ZERO_COPY_BYTES` or more are sent without a copy.

Both functions call pyzmq's compiled `send`/`recv` directly: the Python `send_multipart` and
`recv_multipart` around them cost several times more (flag arithmetic on enums and checks of
each frame), on every message the kernel sends and receives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import zmq

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ("DELIMITER", "ZERO_COPY_BYTES", "Frame", "frame_of", "recv_message", "send_message")

DELIMITER = b"<IDS|MSG>"
"""The frame between the routing identities and the signed part of a message."""

Frame = bytes | memoryview
"""One frame: `bytes`, or a read-only view of memory that nothing writes to (a buffer
received without a copy)."""

ZERO_COPY_BYTES = 65536
"""Frames this size or larger are sent without a copy (jupyter_client's `copy_threshold`)."""

_ENVELOPE_AFTER_DELIMITER = 5
"""signature, header, parent header, metadata, content."""

_SNDMORE = int(zmq.SNDMORE)
_RCVMORE = int(zmq.RCVMORE)
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
_get = zmq.backend.Socket.get


def frame_of(buffer: object) -> Frame:
    """A buffer to send, as a frame that cannot change before zmq has sent it.

    `bytes` and views of received frames are used as they are; anything else with the buffer
    protocol (a `bytearray`, a numpy array, a writable `memoryview`) is copied now, so that
    what is sent is what it held when it was handed over.

    Raises:
        TypeError: `buffer` does not support the buffer protocol.
    """
    if type(buffer) is bytes:
        return buffer
    if isinstance(buffer, memoryview) and _immutable(buffer):
        return buffer
    return bytes(memoryview(buffer))  # pyright: ignore[reportArgumentType]


def _immutable(view: memoryview) -> bool:
    """Whether nothing can write to the memory behind `view` (so sending it uncopied is safe)."""
    owner = view.obj
    return view.c_contiguous and (type(owner) is bytes or isinstance(owner, zmq.Frame))


def send_message(sock: zmq.Socket[bytes], frames: Sequence[Frame]) -> None:
    """Send `frames` as one message; large ones without a copy (zmq keeps them alive)."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        size = frame.nbytes if isinstance(frame, memoryview) else len(frame)
        _send(sock, frame, _SNDMORE if i < last else 0, size < ZERO_COPY_BYTES)


def recv_message(sock: zmq.Socket[bytes], flags: int = 0) -> list[Frame]:
    """Receive one whole message: the envelope as `bytes`, the buffers as views, uncopied.

    Raises:
        zmq.Again: With `zmq.NOBLOCK` in `flags`, when no message is waiting.
    """
    first: bytes = _recv(sock, flags)
    frames: list[Frame] = [first]
    envelope_left = _ENVELOPE_AFTER_DELIMITER if first == DELIMITER else -1
    while _get(sock, _RCVMORE):
        if envelope_left:
            frame: bytes = _recv(sock, 0)
            if envelope_left > 0:
                envelope_left -= 1
            elif frame == DELIMITER:
                envelope_left = _ENVELOPE_AFTER_DELIMITER
            frames.append(frame)
        else:
            frames.append(_recv(sock, 0, False).buffer.toreadonly())
    return frames
