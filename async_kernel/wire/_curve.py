"""CurveZMQ transport encryption: the keys of the connection file and the sockets that use them.

jupyter_client 8.9+ (`KernelManager.transport_encryption`) writes two Z85 strings into the
connection file, `curve_publickey` and `curve_secretkey`, the kernel's own key pair. The kernel
makes every socket it binds, heartbeat included, a CurveZMQ server with that pair: a client has
to know the public key to complete the handshake, so a client without encryption, or with
another server key, is disconnected before a single message reaches the kernel. Each refused
handshake is logged (rate-limited: a client retries for as long as it runs).
"""

from __future__ import annotations

import errno
import itertools
import logging
import struct
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zmq
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

if TYPE_CHECKING:
    from collections.abc import Mapping

    from async_kernel._enums import Channel
    from async_kernel.wire._ratelog import RateLimitedLog

__all__ = ("CurveKeys", "HandshakeWatch", "curve_keys_from", "serve_encrypted")

log = logging.getLogger("async_kernel")

_FIELDS = ("curve_publickey", "curve_secretkey")
_Z85_LENGTH = 40  # a 32-byte key in Z85
_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_ids = itertools.count()


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """The kernel's CurveZMQ key pair, as the connection file holds it (Z85, 40 bytes each)."""

    public: bytes
    """`curve_publickey`: the key a client must know to connect."""
    secret: bytes
    """`curve_secretkey`: the kernel's secret half of the pair."""

    def to_dict(self) -> dict[str, str]:
        """Return the two connection-file fields."""
        return {"curve_publickey": self.public.decode(), "curve_secretkey": self.secret.decode()}


def curve_keys_from(data: Mapping[str, Any]) -> CurveKeys | None:
    """Return the Curve keys of a connection file's object, or None if it has none.

    Both fields absent (or null) means no encryption, as in jupyter_client. Anything else must
    be a usable pair: a file that asks for encryption never gets a plaintext kernel.

    Raises:
        ValueError: One key without the other, a key that is not 40 characters of Z85, a public
            key that does not belong to the secret key, or a pyzmq without CurveZMQ.
    """
    given = {name: data.get(name) for name in _FIELDS}
    if all(value is None for value in given.values()):
        return None
    missing = [name for name, value in given.items() if value is None]
    if missing:
        present = next(name for name in _FIELDS if name not in missing)
        msg = f"{present} is given without {missing[0]}: give both CurveZMQ keys, or neither"
        raise ValueError(msg)
    keys: dict[str, bytes] = {}
    for name, value in given.items():
        if not isinstance(value, str) or len(value) != _Z85_LENGTH:
            shown = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
            msg = f"{name} must be a {_Z85_LENGTH}-character Z85 string, not {shown}"
            raise ValueError(msg)
        try:
            z85.decode(value)
        except (ValueError, KeyError, struct.error):
            msg = f"{name} is not Z85 text"
            raise ValueError(msg) from None
        keys[name] = value.encode("ascii")
    if not zmq.has("curve"):
        msg = (
            "the connection file asks for CurveZMQ encryption, but this pyzmq's libzmq has no "
            "CurveZMQ (zmq.has('curve') is False): install a pyzmq wheel, which includes it"
        )
        raise ValueError(msg)
    public, secret = keys["curve_publickey"], keys["curve_secretkey"]
    if zmq.curve_public(secret) != public:
        msg = "curve_publickey is not the public key of curve_secretkey"
        raise ValueError(msg)
    return CurveKeys(public=public, secret=secret)


def serve_encrypted(sock: zmq.Socket[bytes], keys: CurveKeys) -> None:
    """Make `sock` a CurveZMQ server with `keys` (before it binds)."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


_PROTOCOL_ERRORS: dict[int, str] = {
    int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH): "the client does not use CurveZMQ",
    int(zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC): "a wrong server key",
}


def _reason(event: int, value: int) -> str:
    """Say why libzmq refused a handshake (the monitor's event and value)."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return _PROTOCOL_ERRORS.get(value, f"a CurveZMQ protocol error ({value:#x})")
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"authentication failed (status {value})"
    # No detail: the peer hung up first, as a client without CurveZMQ often does.
    return f"the client broke off the CurveZMQ handshake ({errno.errorcode.get(value, value)})"


class HandshakeWatch:
    """Logs the connections that the kernel's CurveZMQ sockets refuse.

    libzmq reports each failed handshake on a socket monitor; a thread of its own reads the
    monitors of all the kernel's sockets, so the socket thread's loop is left as it is.

    Args:
        context: The context of the watched sockets (monitors are inproc sockets).
        refusals: Where the refusals go: the first of each kind, then counts.
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], refusals: RateLimitedLog) -> None:
        self.context = context
        self.refusals = refusals
        self._prefix = f"inproc://async_kernel.handshakes.{next(_ids)}"
        self._watched: dict[str, Channel] = {}
        self._stop = f"{self._prefix}.stop"
        self._thread: threading.Thread | None = None

    def watch(self, sock: zmq.Socket[bytes], channel: Channel) -> None:
        """Monitor `sock`'s handshakes (before `start`, on the thread that binds `sock`)."""
        address = f"{self._prefix}.{channel}"
        sock.monitor(address, _FAILED)
        self._watched[address] = channel

    def start(self) -> None:
        """Start reading the monitors."""
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="async_kernel_handshakes", daemon=True
        )
        self._thread.start()
        ready.wait(5)

    def stop(self, timeout: float = 2) -> None:
        """End the thread (from any thread)."""
        if self._thread is None:
            return
        poke = self.context.socket(zmq.PAIR)
        try:
            poke.connect(self._stop)
            poke.send(b"", zmq.NOBLOCK)
        except zmq.ZMQError as e:
            log.debug("could not stop the handshake watch: %s", e)
        finally:
            poke.close(linger=0)
        self._thread.join(timeout)

    def _run(self, ready: threading.Event) -> None:
        monitors: dict[zmq.Socket[bytes], Channel] = {}
        stop = self.context.socket(zmq.PAIR)
        try:
            stop.bind(self._stop)
            poller = zmq.Poller()
            poller.register(stop, zmq.POLLIN)
            for address, channel in self._watched.items():
                monitor = self.context.socket(zmq.PAIR)
                monitor.connect(address)
                poller.register(monitor, zmq.POLLIN)
                monitors[monitor] = channel
            ready.set()
            while True:
                events = dict(poller.poll())
                if stop in events:
                    return
                for monitor in events:
                    self._report(monitors[monitor], monitor.recv_multipart())  # pyright: ignore[reportArgumentType]
        except zmq.ContextTerminated:
            pass
        except Exception:
            log.exception("the handshake watch failed")
        finally:
            ready.set()
            stop.close(linger=0)
            for monitor in monitors:
                monitor.close(linger=0)

    def _report(self, channel: Channel, frames: list[bytes]) -> None:
        event = parse_monitor_message(frames)
        if not event["event"] & _FAILED:
            return
        reason = _reason(int(event["event"]), int(event["value"]))
        endpoint = event["endpoint"].decode(errors="replace")
        self.refusals.event(
            f"refused handshake on {channel}",
            f"refused a connection on {channel} ({endpoint}): {reason}",
        )
