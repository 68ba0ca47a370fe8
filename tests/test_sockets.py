"""The socket hub in-process: control is served by a thread that shell and iopub never hold up."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import pytest
import zmq
from signing import KEY

from async_kernel._enums import Channel
from async_kernel.wire._connection import ConnectionInfo
from async_kernel.wire._session import Session
from async_kernel.wire._sockets import BindError, IOThread, SocketHub

if TYPE_CHECKING:
    from collections.abc import Iterator

    from async_kernel.wire._session import Message

TIMEOUT = 10.0


class Hub:
    """A started `SocketHub` whose shell deliveries block until `release` is set."""

    def __init__(self) -> None:
        self.session = Session(KEY)
        self.hub = SocketHub(ConnectionInfo(key=KEY), self.session, self.on_message)
        self.shell_entered = threading.Event()
        self.release = threading.Event()
        self.shell_left = threading.Event()
        self.received: list[tuple[Channel, str, str]] = []
        self.last: dict[Channel, tuple[Message, list[bytes]]] = {}

    def on_message(self, channel: Channel, msg: Message) -> None:
        self.received.append((channel, msg.msg_type, threading.current_thread().name))
        self.last[channel] = (msg, msg.idents)
        if channel is Channel.shell:
            self.shell_entered.set()
            self.release.wait(TIMEOUT)  # the I/O thread of shell is stuck meanwhile
            self.shell_left.set()
        reply = msg.msg_type.replace("_request", "_reply")
        self.hub.send(channel, self.session.serialize(reply, {}, parent=msg, idents=msg.idents))


@pytest.fixture
def hub() -> Iterator[Hub]:
    h = Hub()
    h.hub.start()
    try:
        yield h
    finally:
        h.release.set()
        h.hub.stop()
        h.hub.context.term()


@pytest.fixture
def client(hub: Hub) -> Iterator[dict[Channel, zmq.Socket[bytes]]]:
    ctx = zmq.Context()
    socks: dict[Channel, zmq.Socket[bytes]] = {}
    for channel in (Channel.shell, Channel.control):
        sock = socks[channel] = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(hub.hub.connection.url(channel))
    try:
        yield socks
    finally:
        for sock in socks.values():
            sock.close()
        ctx.term()


def receive(sock: zmq.Socket[bytes], session: Session) -> Message:
    assert sock.poll(int(TIMEOUT * 1000)), "no reply in time"
    return session.deserialize(sock.recv_multipart())


def introduced(hub: Hub, client: dict[Channel, zmq.Socket[bytes]]) -> Session:
    """Let the hub answer, and have both clients send it a request (so it knows their ids)."""
    sender = Session(KEY)
    hub.release.set()
    for channel in (Channel.shell, Channel.control):
        client[channel].send_multipart(sender.serialize("kernel_info_request"))
        receive(client[channel], sender)
    return sender


def test_control_is_answered_while_the_shell_io_thread_is_stuck(
    hub: Hub, client: dict[Channel, zmq.Socket[bytes]]
) -> None:
    sender = Session(KEY)
    client[Channel.shell].send_multipart(sender.serialize("execute_request", {"code": "1"}))
    assert hub.shell_entered.wait(TIMEOUT)
    for i in range(2000):  # an iopub backlog behind the stuck thread
        hub.hub.send(Channel.iopub, sender.serialize("stream", {"name": "stdout", "text": f"{i}"}))
    client[Channel.control].send_multipart(sender.serialize("kernel_info_request"))
    reply = receive(client[Channel.control], sender)
    assert reply.msg_type == "kernel_info_reply"
    assert not hub.shell_left.is_set()  # answered while the shell's thread still waits
    names = {channel: name for channel, _, name in hub.received}
    assert names == {Channel.shell: "async_kernel_io", Channel.control: "async_kernel_control_io"}
    hub.release.set()
    assert receive(client[Channel.shell], sender).msg_type == "execute_reply"


def test_stop_sends_what_is_queued_on_every_socket(
    hub: Hub, client: dict[Channel, zmq.Socket[bytes]]
) -> None:
    sender = introduced(hub, client)
    for channel in (Channel.shell, Channel.control):
        parent, ident = hub.last[channel]
        for i in range(100):
            frames = sender.serialize("stream", {"i": i}, parent=parent, idents=ident)
            hub.hub.send(channel, frames)
    hub.hub.stop()
    for channel in (Channel.shell, Channel.control):
        assert [receive(client[channel], sender).content["i"] for _ in range(100)] == list(
            range(100)
        )
    alive = {t.name for t in threading.enumerate()}
    assert not alive & {"async_kernel_io", "async_kernel_control_io"}


def test_a_port_in_use_fails_the_start_and_leaves_no_thread() -> None:
    ctx = zmq.Context()
    taken = ctx.socket(zmq.ROUTER)
    try:
        port = taken.bind_to_random_port("tcp://127.0.0.1")
        conn = ConnectionInfo(key=KEY, ports={Channel.control: port})
        hub = SocketHub(conn, Session(KEY), lambda channel, msg: None)
        with pytest.raises(BindError, match=f"cannot bind the control socket to .*:{port}"):
            hub.start()
        hub.stop()
        hub.context.term()  # every socket it made is closed, or this would hang
    finally:
        taken.close(linger=0)
        ctx.term()
    alive = {t.name for t in threading.enumerate()}
    assert not alive & {"async_kernel_io", "async_kernel_control_io", "async_kernel_heartbeat"}


def woken(thread: IOThread) -> bool:
    """Whether `thread` has been woken (a byte in its wake-up pipe), clearing the pipe."""
    try:
        return bool(os.read(thread._wake_r, 64))  # pyright: ignore[reportPrivateUsage]
    except BlockingIOError:
        return False


def test_a_held_message_wakes_no_thread_until_the_senders_next_send() -> None:
    """`send_held` only queues; the same thread's next `send`, on any socket, wakes both."""
    hub = SocketHub(ConnectionInfo(key=KEY), Session(KEY))  # not started: nothing drains
    hub.send_held(Channel.control, [b"held"])
    assert list(hub.control_io._outbox) == [(Channel.control, [b"held"])]  # pyright: ignore[reportPrivateUsage]
    assert not woken(hub.control_io)
    other = threading.Thread(target=hub.send, args=(Channel.iopub, [b"other"]))
    other.start()
    other.join(TIMEOUT)
    assert woken(hub.io)
    assert not woken(hub.control_io)  # another thread's send does not take it along
    hub.send(Channel.shell, [b"now"])  # (the shell thread's wake-up is still pending)
    assert woken(hub.control_io)
    hub.context.term()


def test_a_held_message_arrives_with_the_next_one(
    hub: Hub, client: dict[Channel, zmq.Socket[bytes]]
) -> None:
    sender = introduced(hub, client)
    (control, control_ident), (shell, shell_ident) = (
        hub.last[Channel.control],
        hub.last[Channel.shell],
    )
    held = sender.serialize("stream", {"i": "held"}, parent=control, idents=control_ident)
    hub.hub.send_held(Channel.control, held)
    hub.hub.send(
        Channel.shell, sender.serialize("stream", {"i": "now"}, parent=shell, idents=shell_ident)
    )
    assert receive(client[Channel.control], sender).content == {"i": "held"}
    assert receive(client[Channel.shell], sender).content == {"i": "now"}


def test_clearing_the_wake_pipe_empties_it_however_full() -> None:
    hub = SocketHub(ConnectionInfo(key=KEY), Session(KEY))  # not started: we clear it here
    thread = hub.io
    thread.wake()
    os.write(thread._wake_w, b"\0" * 10_000)  # pyright: ignore[reportPrivateUsage]
    thread._clear_wake()  # pyright: ignore[reportPrivateUsage]
    assert not woken(thread)
    assert not thread._wake_pending  # pyright: ignore[reportPrivateUsage]
    thread.wake()  # the next wake-up writes again
    assert woken(thread)
    hub.context.term()


def test_a_flood_of_requests_is_received_whole_and_in_order(
    hub: Hub, client: dict[Channel, zmq.Socket[bytes]]
) -> None:
    """More requests than one receive burst takes: each is delivered once, in order."""
    sender = introduced(hub, client)
    count = 500
    sent: list[str] = []
    for _ in range(count):
        frames = sender.serialize("kernel_info_request")
        sent.append(sender.deserialize(frames).msg_id)
        client[Channel.shell].send_multipart(frames)
    replies = [receive(client[Channel.shell], sender) for _ in range(count)]
    assert [r.parent_header["msg_id"] for r in replies] == sent
    shell = [c for c, _, _ in hub.received if c is Channel.shell]
    assert len(shell) == count + 1  # and the introduction


def test_send_soon_wakes_the_thread_unless_a_request_just_arrived() -> None:
    hub = SocketHub(ConnectionInfo(key=KEY), Session(KEY))  # not started: nothing drains
    assert not hub.io.send_soon(Channel.iopub, [b"a"])
    assert woken(hub.io)
    hub.io._hold_until = 1.0  # pyright: ignore[reportPrivateUsage]  # as after a request
    hub.io._wake_pending = False  # pyright: ignore[reportPrivateUsage]
    assert hub.io.send_soon(Channel.iopub, [b"b"])
    assert not woken(hub.io)
    assert [f for _, f in hub.io._outbox] == [[b"a"], [b"b"]]  # pyright: ignore[reportPrivateUsage]
    hub.context.term()


class Soon(Hub):
    """A hub whose shell requests get their reply from the test, with `send_soon`."""

    def __init__(self, hold: float) -> None:
        super().__init__()
        self.hub.io.hold = hold
        self.arrived = threading.Event()

    def on_message(self, channel: Channel, msg: Message) -> None:
        self.last[channel] = (msg, msg.idents)
        self.arrived.set()


def soon_reply(hold: float) -> tuple[Soon, zmq.Context[zmq.Socket[bytes]], zmq.Socket[bytes]]:
    """A started `Soon` hub and a shell client whose request has just arrived."""
    h = Soon(hold)
    h.hub.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(h.hub.connection.url(Channel.shell))
    sock.send_multipart(h.session.serialize("execute_request", {"code": "1"}))
    assert h.arrived.wait(TIMEOUT)
    return h, ctx, sock


def close(h: Hub, ctx: zmq.Context[zmq.Socket[bytes]], sock: zmq.Socket[bytes]) -> None:
    sock.close()
    ctx.term()
    h.hub.stop()
    h.hub.context.term()


def test_what_is_sent_soon_after_a_request_waits_for_the_next_send() -> None:
    h, ctx, sock = soon_reply(hold=TIMEOUT * 10)  # a hold that outlasts the test
    try:
        msg, ident = h.last[Channel.shell]
        first = h.session.serialize("stream", {"i": 1}, parent=msg, idents=ident)
        h.hub.send_soon(Channel.shell, first)
        assert not h.hub.io._wake_pending  # pyright: ignore[reportPrivateUsage]
        assert not sock.poll(0)
        h.hub.send(Channel.shell, h.session.serialize("stream", {"i": 2}, parent=msg, idents=ident))
        assert [receive(sock, h.session).content["i"] for _ in range(2)] == [1, 2]
    finally:
        close(h, ctx, sock)


def test_what_is_sent_soon_goes_out_when_the_hold_ends() -> None:
    h, ctx, sock = soon_reply(hold=0.05)
    try:
        msg, ident = h.last[Channel.shell]
        frames = h.session.serialize("stream", {"i": 1}, parent=msg, idents=ident)
        h.hub.send_soon(Channel.shell, frames)  # with nothing after it
        assert receive(sock, h.session).content == {"i": 1}
    finally:
        close(h, ctx, sock)
