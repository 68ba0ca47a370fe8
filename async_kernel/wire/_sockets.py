"""The zmq sockets and the threads that own them.

Two I/O threads own the sockets: `async_kernel_io` the shell and stdin ROUTERs and the iopub
XPUB, `async_kernel_control_io` the control ROUTER alone, so that a flood of shell requests and
iopub output never delays a control request or its reply. Each receives, verifies and decodes
the requests of its sockets and hands them on, and sends the frames that any thread queues for
them with `SocketHub.send`. No other thread touches these sockets. The heartbeat echo runs in
libzmq on a thread of its own, so a busy interpreter never looks dead.

Every socket binds exactly where the connection info says (a port in use is a `BindError`, never
another port), and with CurveZMQ keys in the connection info every one of them, heartbeat
included, is a CurveZMQ server.
"""

from __future__ import annotations

import collections
import errno
import logging
import math
import os
import threading
import time
from typing import TYPE_CHECKING

import zmq

from async_kernel._enums import Channel
from async_kernel._threads import hide_from_debugger
from async_kernel.wire._curve import HandshakeWatch, serve_encrypted
from async_kernel.wire._frames import recv_message, send_message
from async_kernel.wire._ratelog import RateLimitedLog
from async_kernel.wire._session import MessageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from async_kernel.wire._connection import ConnectionInfo
    from async_kernel.wire._frames import Frame
    from async_kernel.wire._session import Message, Session

__all__ = ("SOON", "BindError", "IOThread", "SocketHub")

log = logging.getLogger("async_kernel")

_ROUTERS = (Channel.shell, Channel.control, Channel.stdin)
_RECV_BURST = 64  # messages taken from one socket before the others get a turn
_SEND_BURST = 256  # messages sent before the sockets are polled for requests again
SOON = 0.002
"""Seconds that a message sent with `SocketHub.send_soon` may wait, at most, after a request."""


class BindError(RuntimeError):
    """A socket cannot be bound where the connection info says (a port in use, a foreign ip).

    The kernel never falls back to another port: the launcher wrote the ports down, and its
    clients connect there.
    """

    def __init__(self, channel: Channel, url: str, error: zmq.ZMQError) -> None:
        self.channel = channel
        """The socket that could not be bound."""
        self.url = url
        """Where it was to be bound."""
        hint = ""
        if error.errno == errno.EADDRINUSE:
            hint = ": another process holds it (give a free port, or 0 to let the kernel choose)"
        elif error.errno == errno.EADDRNOTAVAIL:
            hint = ": this address is not one of this machine's interfaces"
        reason = zmq.strerror(error.errno) if error.errno else str(error)
        super().__init__(f"cannot bind the {channel} socket to {url}: {reason}{hint}")


class SocketHub:
    """Owns the kernel's sockets on two I/O threads; thread-safe `send` for everyone else.

    Args:
        connection: Where to bind; ports that are 0 are chosen here and written back.
        session: Verifies incoming and signs outgoing messages.
        on_message: Called on an I/O thread with each verified message of shell, control and
            stdin (also a malformed one: see `Message.problem`). It must not block; it hands
            the message on. It can be set until `start`.
    """

    def __init__(
        self,
        connection: ConnectionInfo,
        session: Session,
        on_message: Callable[[Channel, Message], None] | None = None,
    ) -> None:
        self.connection = connection
        self.session = session
        self.on_message = on_message
        self.context = zmq.Context()
        self.drops = RateLimitedLog(log)
        """The log of dropped messages: the first of each kind, then counts (rate-limited)."""
        self.io = IOThread("async_kernel_io", self)
        """The thread of the shell, stdin and iopub sockets."""
        self.control_io = IOThread("async_kernel_control_io", self)
        """The thread of the control socket, which nothing else delays."""
        self._threads = {
            Channel.shell: self.io,
            Channel.stdin: self.io,
            Channel.iopub: self.io,
            Channel.control: self.control_io,
        }
        self._hb_thread: threading.Thread | None = None
        self._held = threading.local()  # per sending thread: I/O threads it has not woken
        self.handshakes = (
            HandshakeWatch(self.context, self.drops) if connection.curve is not None else None
        )
        """Logs the connections refused by CurveZMQ (None without encryption)."""

    # --- public, any thread ----------------------------------------------------------------

    def start(self, timeout: float = 10) -> None:
        """Bind every socket and start the threads; return when they are listening.

        Raises:
            BindError: A socket cannot be bound where the connection info says.
            RuntimeError: The sockets could not be opened (the cause is chained), or a thread
                did not start.
        """
        assert self.on_message is not None, "SocketHub.on_message must be set before start()"
        try:
            socks = self._open()
        except BindError:
            raise
        except (zmq.ZMQBaseError, OSError) as e:
            msg = f"could not bind the kernel's sockets: {e}"
            raise RuntimeError(msg) from e
        for thread in (self.control_io, self.io):
            thread.start({c: s for c, s in socks.items() if self._threads[c] is thread})
        for thread in (self.control_io, self.io):
            if not thread.ready.wait(timeout):
                msg = f"the I/O thread {thread.name} did not start in time"
                raise RuntimeError(msg)

    def send(self, channel: Channel, frames: Sequence[Frame]) -> None:
        """Queue `frames` to be sent on `channel`'s socket now; callable from any thread.

        What this thread queued with `send_held` goes with them.
        """
        self._threads[channel].send(channel, frames)
        self._wake_held()

    def _wake_held(self) -> None:
        """Wake the I/O threads that this thread queued held messages for."""
        held: set[IOThread] | None = getattr(self._held, "threads", None)
        if held:
            for thread in held:
                thread.wake()
            held.clear()

    def send_held(self, channel: Channel, frames: Sequence[Frame]) -> None:
        """Queue `frames` without waking the I/O thread: they go with this thread's next `send`.

        For a message that another one follows at once (a reply its `idle`): one wake-up of
        the I/O thread instead of two. The I/O thread may send it earlier, never later than
        that next `send`, and always in order.
        """
        thread = self._threads[channel]
        thread.send(channel, frames, wake=False)
        held: set[IOThread] | None = getattr(self._held, "threads", None)
        if held is None:
            held = self._held.threads = set()
        held.add(thread)

    def send_soon(self, channel: Channel, frames: Sequence[Frame]) -> None:
        """Queue `frames` to be sent within `SOON` seconds, with no wake-up of their own.

        For a message that its request's next ones usually follow within a moment (the `busy`
        and `execute_input` of a cell): right after a shell request arrives, its I/O thread
        waits `SOON` seconds for more to send before it sends what is queued, so that a quick
        request's messages all go with one wake-up. At other times this is `send`. Order is
        always kept.
        """
        if not self._threads[channel].send_soon(channel, frames):
            self._wake_held()

    def stop(self, timeout: float = 5) -> None:
        """Send what is queued, then close the sockets and end the I/O threads."""
        for thread in (self.control_io, self.io):
            thread.stop()
        deadline = time.monotonic() + timeout
        for thread in (self.control_io, self.io):
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.handshakes is not None:
            self.handshakes.stop(max(0.0, deadline - time.monotonic()))

    @property
    def ports(self) -> dict[Channel, int]:
        """The bound port of each socket."""
        return dict(self.connection.ports)

    # --- binding (the thread that calls `start`) -------------------------------------------

    def _bind(self, sock: zmq.Socket[bytes], channel: Channel) -> None:
        """Bind `sock` exactly where the connection info says; choose the port only if it is 0."""
        conn = self.connection
        if conn.curve is not None:
            serve_encrypted(sock, conn.curve)
            if self.handshakes is not None:
                self.handshakes.watch(sock, channel)
        port = conn.ports.get(channel, 0)
        if conn.transport == "tcp":
            if ":" in conn.ip:  # an IPv6 address: libzmq binds IPv4 only unless told
                sock.setsockopt(zmq.IPV6, 1)
            url = conn.url(channel, port if port > 0 else "*")  # *: the system picks a port
        else:
            if port <= 0:
                port = 1
                while os.path.exists(f"{conn.ip}-{port}") or port in conn.ports.values():
                    port += 1
            url = conn.url(channel, port)
        try:
            sock.bind(url)
        except zmq.ZMQError as e:
            raise BindError(channel, url, e) from e
        if port <= 0:
            endpoint: bytes = sock.getsockopt(zmq.LAST_ENDPOINT)  # pyright: ignore[reportAssignmentType]
            port = int(endpoint.rpartition(b":")[2])
        conn.ports[channel] = port

    def _open(self) -> dict[Channel, zmq.Socket[bytes]]:
        """Bind every socket; start the heartbeat. The I/O threads take the others over."""
        socks: dict[Channel, zmq.Socket[bytes]] = {}
        try:
            for channel in _ROUTERS:
                sock = socks[channel] = self.context.socket(zmq.ROUTER)
                sock.setsockopt(zmq.LINGER, 1000)
                sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
                self._bind(sock, channel)
            iopub = socks[Channel.iopub] = self.context.socket(zmq.XPUB)
            iopub.setsockopt(zmq.LINGER, 1000)
            iopub.setsockopt(zmq.SNDHWM, 0)  # status and output are never dropped
            iopub.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription gets its welcome
            self._bind(iopub, Channel.iopub)
            hb = socks[Channel.heartbeat] = self.context.socket(zmq.ROUTER)
            hb.setsockopt(zmq.LINGER, 0)
            self._bind(hb, Channel.heartbeat)
        except BaseException:
            for sock in socks.values():  # the ports bound so far are free again
                sock.close(linger=0)
            raise
        del socks[Channel.heartbeat]
        self._hb_thread = threading.Thread(
            target=self._heartbeat, args=(hb,), name="async_kernel_heartbeat", daemon=True
        )
        hide_from_debugger(self._hb_thread)
        self._hb_thread.start()
        if self.handshakes is not None:
            self.handshakes.start()
        return socks

    @staticmethod
    def _heartbeat(sock: zmq.Socket[bytes]) -> None:
        try:
            zmq.proxy(sock, sock)  # echoes every ping inside libzmq, without the GIL
        except zmq.ContextTerminated:
            pass
        except zmq.ZMQError as e:
            log.debug("heartbeat ended: %s", e)
        finally:
            sock.close(linger=0)

    # --- on the I/O threads ----------------------------------------------------------------

    def receive(self, channel: Channel, sock: zmq.Socket[bytes]) -> None:
        """Take up to a burst of messages from `sock`: verify, decode and hand each on."""
        deliver = self.on_message
        assert deliver is not None
        for n in range(_RECV_BURST):
            # After the first message (the poll said there is one), ask the socket whether
            # another is there: cheaper than ending each burst with a `zmq.Again`.
            if n and not sock.get(zmq.EVENTS) & zmq.POLLIN:  # pyright: ignore[reportOperatorIssue]
                return
            try:
                frames = recv_message(sock, zmq.NOBLOCK)
            except zmq.Again:
                return
            if channel is Channel.iopub:
                self._subscription(frames)
                continue
            try:
                msg = self.session.deserialize(frames)
            except MessageError as e:
                self.drops.event(e.kind, f"dropped a message on {channel}: {e}")
                continue
            try:
                deliver(channel, msg)
            except Exception:
                log.exception("could not dispatch %s on %s", msg.msg_type, channel)

    def _subscription(self, frames: Sequence[Frame]) -> None:
        first = bytes(frames[0]) if frames else b""
        if not first or first[0] != 1:
            return  # an unsubscription or noise
        topic = first[1:].decode(errors="replace")
        welcome = self.session.serialize("iopub_welcome", {"subscription": topic})
        self.io.send(Channel.iopub, welcome)


class IOThread:
    """One thread that owns some of the kernel's sockets: it receives and sends on them alone.

    Args:
        name: The thread's name.
        hub: Receives on the thread's sockets (`SocketHub.receive`).
    """

    def __init__(self, name: str, hub: SocketHub) -> None:
        self.name = name
        self._hub = hub
        self._outbox: collections.deque[tuple[Channel, Sequence[Frame]]] = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._wake_pending = False
        self.hold = SOON
        """Seconds that `send_soon` frames may wait after a shell request arrived."""
        self._hold_until = 0.0  # while set, `send_soon` queues without a wake-up until then
        self._stopping = False
        self.ready = threading.Event()
        """Set once the thread polls its sockets."""
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, socks: dict[Channel, zmq.Socket[bytes]]) -> None:
        """Take `socks` over (bound by the calling thread) and serve them on a new thread."""
        self._thread = threading.Thread(target=self._run, args=(socks,), name=self.name)
        self._thread.daemon = True
        hide_from_debugger(self._thread)
        self._thread.start()

    def send(self, channel: Channel, frames: Sequence[Frame], *, wake: bool = True) -> None:
        """Queue `frames` for `channel`'s socket, one of this thread's; any thread may call it.

        With `wake` false the thread is not woken for them (the caller wakes it soon).
        """
        self._outbox.append((channel, frames))
        if wake:
            self.wake()

    def send_soon(self, channel: Channel, frames: Sequence[Frame]) -> bool:
        """Queue `frames`; wake the thread unless it sends within `SOON` seconds anyway.

        Returns:
            Whether the frames wait (the thread was not woken).
        """
        self._outbox.append((channel, frames))
        # Appended before the flag is read: the thread clears the flag before it sends, so
        # frames queued while the flag is seen set are sent by that flush at the latest.
        if self._hold_until:
            return True
        self.wake()
        return False

    def wake(self) -> None:
        """Have the thread send what is queued (one wake-up however often it is called)."""
        if not self._wake_pending:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"\0")
            except OSError:  # the pipe is full: the thread is awake anyway
                pass

    def stop(self) -> None:
        """Have the thread send what is queued, close its sockets and end."""
        self._stopping = True
        self.send(Channel.iopub, [])  # a wake-up; empty frames are never sent

    def join(self, timeout: float) -> None:
        """Wait until the thread ended (at most `timeout` seconds), unless called on it."""
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._stopped.wait(timeout)

    def _run(self, socks: dict[Channel, zmq.Socket[bytes]]) -> None:
        poller = zmq.Poller()
        for sock in socks.values():
            poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        by_socket = {sock: channel for channel, sock in socks.items()}
        self.ready.set()
        try:
            while True:
                if self._hold_until and time.monotonic() >= self._hold_until:
                    self._hold_until = 0.0  # cleared before the flush: see `send_soon`
                more = self._flush(socks, limit=_SEND_BURST)
                if self._stopping and not more:
                    break
                # With output still queued, only look for new requests before sending on.
                for sock, _ in poller.poll(self._poll_timeout(more=more)):
                    if sock == self._wake_r:
                        self._clear_wake()
                        self._hold_until = 0.0  # a message to send now: the held go along
                        continue
                    channel = by_socket[sock]
                    if channel is Channel.shell:  # armed before the request can reply
                        self._hold_until = time.monotonic() + self.hold
                    self._hub.receive(channel, sock)  # pyright: ignore[reportArgumentType]
        except Exception:
            log.exception("the I/O thread %s failed", self.name)
        finally:
            self._flush(socks, limit=None)
            for sock in socks.values():
                sock.close()
            self._hub.drops.flush()
            self._stopped.set()

    def _poll_timeout(self, *, more: bool) -> int | None:
        """Milliseconds to wait for sockets: none with output queued, until the hold ends."""
        if more:
            return 0
        if self._hold_until:
            return max(1, math.ceil((self._hold_until - time.monotonic()) * 1000))
        return None

    def _clear_wake(self) -> None:
        try:
            # `_wake_pending` keeps at most a byte or two in the pipe: a short read emptied it,
            # so no second read (a syscall and an exception) is needed to find out.
            while len(os.read(self._wake_r, 4096)) == 4096:
                pass
        except BlockingIOError:
            pass
        except OSError as e:  # pragma: no cover - the pipe was closed
            if e.errno != errno.EBADF:
                raise
        # Cleared after the pipe is read and before the outbox is drained: a writer that saw
        # the flag still set appended before the drain, and one that sees it clear wakes us
        # again. (Clearing it before the read could swallow a wake-up and strand the flag.)
        self._wake_pending = False

    def _flush(self, socks: dict[Channel, zmq.Socket[bytes]], *, limit: int | None) -> bool:
        """Send up to `limit` queued messages; return whether some are left."""
        outbox = self._outbox
        sent = 0
        while outbox:
            if limit is not None and sent >= limit:
                return True
            channel, frames = outbox.popleft()
            if frames:  # empty frames are a wake-up
                try:
                    send_message(socks[channel], frames)
                except zmq.ZMQError as e:
                    log.warning("could not send on %s: %s", channel, e)
            sent += 1
        return False
