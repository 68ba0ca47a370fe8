"""ipykernel's session and socket API on our wire, in-process: `async_kernel.wire._ipykernel`.

Every message is checked with jupyter_client's own `Session` (same key): what
`kernel.session.send(kernel.iopub_socket, ...)` puts on the wire is what a client accepts.
"""

from __future__ import annotations

import datetime
import os
import threading
from typing import Any

import pytest
from jupyter_client.session import Session as ClientSession
from signing import KEY

import async_kernel.wire._ipykernel
from async_kernel._enums import Channel
from async_kernel.wire._frames import DELIMITER
from async_kernel.wire._ipykernel import (
    KernelSession,
    KernelSocket,
    ParentMessage,
    extract_header,
    job_for,
    parent_message,
)
from async_kernel.wire._job import Job
from async_kernel.wire._outbox import Outbox
from async_kernel.wire._session import Message

TIMEOUT = 10.0


class Sent:
    """Collects what the outbox hands to the socket thread."""

    def __init__(self) -> None:
        self.frames: list[tuple[Channel, list[bytes]]] = []
        self._lock = threading.Lock()

    def __call__(self, channel: Channel, frames: list[bytes]) -> None:
        with self._lock:
            self.frames.append((channel, frames))


def client_view(frames: list[bytes]) -> tuple[list[bytes], dict[str, Any]]:
    """Idents and the message as jupyter_client decodes (and verifies) it."""
    idents, rest = ClientSession(key=KEY).feed_identities(frames, copy=True)
    return idents, ClientSession(key=KEY).deserialize(rest, content=True, copy=True)


@pytest.fixture
def wire() -> tuple[KernelSession, KernelSocket, Sent]:
    session = KernelSession(KEY)
    sent = Sent()
    return session, KernelSocket(Channel.iopub, Outbox(session, sent)), sent


def request(msg_id: str = "req-1", **header: Any) -> Job:
    msg = Message(
        {"msg_id": msg_id, "msg_type": "execute_request", **header},
        {},
        {"tags": []},
        {"code": "1", "allow_stdin": True},
        idents=[b"client"],
        raw_header=f'{{"msg_id":"{msg_id}"}}'.encode(),
    )
    return Job(msg, Channel.shell, subshell_id=header.get("subshell_id"))


def test_all_is_declared() -> None:
    assert set(async_kernel.wire._ipykernel.__all__) == {
        "KernelSession",
        "KernelSocket",
        "ParentMessage",
        "extract_header",
        "job_for",
        "parent_message",
    }


def test_send_on_the_iopub_socket_is_signed_and_routed(
    wire: tuple[KernelSession, KernelSocket, Sent],
) -> None:
    session, iopub, sent = wire
    parent = parent_message(request())
    content = {"data": {"text/plain": "1"}, "metadata": {}, "transient": {"display_id": "x"}}
    msg = session.send(iopub, "display_data", content, parent=parent, buffers=[b"\x00\x01"])
    assert msg is not None
    assert set(msg) >= {"header", "msg_id", "msg_type", "parent_header", "content", "metadata"}
    assert msg["msg_type"] == "display_data" == msg["header"]["msg_type"]
    assert msg["header"]["session"] == session.session == session.session_id
    assert msg["parent_header"] == parent["header"]
    ((channel, frames),) = sent.frames
    assert channel is Channel.iopub
    idents, received = client_view(frames)
    assert idents == [f"kernel.{session.session_id}.display_data".encode()]
    assert received["header"]["msg_id"] == msg["msg_id"]
    assert received["parent_header"]["msg_id"] == "req-1"
    assert received["content"] == content
    assert [bytes(b) for b in received["buffers"]] == [b"\x00\x01"]


def test_send_takes_a_whole_message_and_an_ident(
    wire: tuple[KernelSession, KernelSocket, Sent],
) -> None:
    session, iopub, sent = wire
    msg = session.msg("stream", {"name": "stdout", "text": "hi"}, parent={"msg_id": "p"})
    again = session.send(iopub, msg, ident=b"my.topic")
    assert again is msg
    ((_, frames),) = sent.frames
    idents, received = client_view(frames)
    assert idents == [b"my.topic"]
    assert received["parent_header"] == {"msg_id": "p"}


def test_send_to_a_foreign_socket_gives_it_signed_frames() -> None:
    session = KernelSession(KEY)
    got: list[list[bytes]] = []

    class Foreign:
        def send_multipart(self, frames: list[bytes]) -> None:
            got.append(frames)

    header = session.msg_header("comm_msg")
    msg = session.send(Foreign(), "comm_msg", {"comm_id": "c"}, ident=[b"a", b"b"], header=header)
    assert msg is not None
    assert msg["header"] is header
    (frames,) = got
    idents, received = client_view(frames)
    assert idents == [b"a", b"b"]
    assert received["content"] == {"comm_id": "c"}
    assert session.send(None, "comm_msg", {"comm_id": "c"}) is not None, "built, not sent"


def test_raw_frames_go_out_as_given(wire: tuple[KernelSession, KernelSocket, Sent]) -> None:
    session, iopub, sent = wire
    frames = session.encode(session.msg("clear_output", {"wait": False}), [b"t"])
    iopub.send_multipart([*frames[:-1], memoryview(frames[-1])], copy=False)
    assert sent.frames == [(Channel.iopub, frames)]
    assert repr(iopub) == "<KernelSocket iopub>"


def test_buffers_must_be_buffers(wire: tuple[KernelSession, KernelSocket, Sent]) -> None:
    session, iopub, sent = wire
    with pytest.raises(TypeError, match="buffer protocol"):
        session.send(iopub, "display_data", {}, buffers=["text"])
    assert sent.frames == []


def test_a_forked_child_does_not_send(wire: tuple[KernelSession, KernelSocket, Sent]) -> None:
    session, iopub, sent = wire
    session.pid = os.getpid() + 1
    assert session.send(iopub, "display_data", {}) is None
    assert sent.frames == []


def test_messages_of_a_subshell_request_say_so(
    wire: tuple[KernelSession, KernelSocket, Sent],
) -> None:
    session, _, _ = wire
    job = request(subshell_id="sub-1")
    assert session.msg("stream", {}, parent=job)["header"]["subshell_id"] == "sub-1"
    assert "subshell_id" not in session.msg("stream", {}, parent=request())["header"]


def test_a_parent_message_is_the_request_and_gives_back_its_job() -> None:
    job = request()
    parent = parent_message(job)
    assert isinstance(parent, ParentMessage)
    assert parent == job.msg.to_dict()
    assert parent["header"]["msg_id"] == "req-1"
    assert job_for(parent) is job
    assert job_for(job) is job
    assert parent_message(None) == {}
    assert job_for(None) is None
    assert job_for({}) is None


def test_a_foreign_parent_becomes_a_job_of_its_own() -> None:
    when = datetime.datetime(2025, 1, 2, tzinfo=datetime.UTC)
    header = {"msg_id": "m-1", "msg_type": "execute_request", "date": when, "subshell_id": "s"}
    job = job_for({"header": header, "content": {"allow_stdin": True}}, ident=b"client")
    assert job is not None
    assert job.msg.msg_id == "m-1"
    assert job.content == {"allow_stdin": True}
    assert job.ident == [b"client"]
    assert job.subshell_id == "s"
    assert job.channel is Channel.shell
    assert b'"m-1"' in job.msg.raw_header, "outputs quote it as their parent header"
    by_header = job_for(header, channel=Channel.control)
    assert by_header is not None
    assert by_header.msg.msg_id == "m-1"
    assert by_header.channel is Channel.control
    rerouted = job_for(parent_message(request()), ident=[b"other"])
    assert rerouted is not None
    assert rerouted.ident == [b"other"]


def test_extract_header_takes_every_form_of_parent() -> None:
    job = request()
    assert extract_header(job) == job.msg.header
    assert extract_header(job) is not job.msg.header
    assert extract_header({"header": {"msg_id": "a"}}) == {"msg_id": "a"}
    assert extract_header({"msg_id": "a"}) == {"msg_id": "a"}
    assert extract_header(None) == extract_header({}) == {}
    with pytest.raises(KeyError, match="header"):
        extract_header({"content": {}})


def test_outbox_send_message_frames_a_message_dict() -> None:
    session = KernelSession(KEY)
    sent = Sent()
    outbox = Outbox(session, sent)
    msg = session.msg("comm_msg", {"comm_id": "c", "data": {}})
    outbox.send_message(Channel.shell, msg, idents=[b"peer"], buffers=[b"raw"])
    ((channel, frames),) = sent.frames
    assert channel is Channel.shell
    assert frames[0] == b"peer"
    assert frames[1] == DELIMITER
    assert frames[-1] == b"raw"
    _, received = client_view(frames)
    assert received["content"] == {"comm_id": "c", "data": {}}


def test_sends_from_many_threads_all_arrive_intact(
    wire: tuple[KernelSession, KernelSocket, Sent],
) -> None:
    session, iopub, sent = wire
    threads, each = 8, 50
    barrier = threading.Barrier(threads)

    def send(n: int) -> None:
        barrier.wait(TIMEOUT)
        for i in range(each):
            session.send(iopub, "stream", {"name": "stdout", "text": f"{n}:{i}"})

    workers = [threading.Thread(target=send, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(TIMEOUT)
        assert not w.is_alive()
    texts = [client_view(frames)[1]["content"]["text"] for _, frames in sent.frames]
    assert sorted(texts) == sorted(f"{n}:{i}" for n in range(threads) for i in range(each))
    ids = [client_view(frames)[1]["header"]["msg_id"] for _, frames in sent.frames]
    assert len(set(ids)) == len(ids)
