"""Frames over a real zmq socket pair: the envelope as bytes, buffers as uncopied views."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import zmq
from signing import KEY

from async_kernel.wire._frames import ZERO_COPY_BYTES, frame_of, recv_message, send_message
from async_kernel.wire._session import Session

if TYPE_CHECKING:
    from collections.abc import Iterator

TIMEOUT_MS = 10_000


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    ctx = zmq.Context()
    a: zmq.Socket[bytes] = ctx.socket(zmq.PAIR)
    b: zmq.Socket[bytes] = ctx.socket(zmq.PAIR)
    a.bind("inproc://frames")
    b.connect("inproc://frames")
    b.rcvtimeo = TIMEOUT_MS
    yield a, b
    a.close(linger=0)
    b.close(linger=0)
    ctx.term()


def test_a_message_with_buffers_arrives_whole(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    a, b = pair
    session = Session(KEY)
    big = bytes(range(256)) * (ZERO_COPY_BYTES // 128)  # sent without a copy
    frames = session.serialize(
        "comm_msg", {"comm_id": "c"}, idents=[b"id-1", b"id-2"], buffers=[b"small", big, b""]
    )
    send_message(a, frames)
    got = recv_message(b)
    assert [bytes(f) for f in got] == [bytes(f) for f in frames]
    split = got.index(b"<IDS|MSG>")
    assert all(type(f) is bytes for f in got[: split + 6])
    views = got[split + 6 :]
    assert all(type(v) is memoryview and v.readonly for v in views)
    msg = session.deserialize(got)
    assert msg.idents == [b"id-1", b"id-2"]
    assert [bytes(v) for v in msg.buffers] == [b"small", big, b""]


def test_a_message_without_a_delimiter_comes_as_bytes(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    """A message without a delimiter (noise, a subscription) comes as bytes, frame by frame."""
    a, b = pair
    a.send_multipart([b"\x01topic", b"more", b"x" * ZERO_COPY_BYTES])
    got = recv_message(b)
    assert got == [b"\x01topic", b"more", b"x" * ZERO_COPY_BYTES]
    assert all(type(f) is bytes for f in got)


def test_nothing_waiting_raises_again(pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]]) -> None:
    _, b = pair
    with pytest.raises(zmq.Again):
        recv_message(b, zmq.NOBLOCK)


def test_a_received_view_is_sent_on_uncopied_and_a_writable_buffer_is_copied() -> None:
    frame = zmq.Frame(b"payload")
    view = frame.buffer.toreadonly()
    assert frame_of(view) is view
    data = bytearray(b"mutable")
    copied = frame_of(data)
    data[:] = b"changed"
    assert copied == b"mutable"
    assert type(frame_of(memoryview(bytearray(b"x")))) is bytes
    with pytest.raises(TypeError):
        frame_of(object())
