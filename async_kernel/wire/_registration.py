"""The JEP 66 handshake (protocol 5.6): report the ports the kernel chose to a registrar.

With a registration file instead of a connection file, the kernel binds its five sockets on
ports the system picks (no launcher can race it for them), then connects a DEALER to the
registration socket and sends one signed, single-frame message::

    [b"<IDS|MSG>", hmac(content), content]
    content = {"kernel_id": ..., "control_port": ..., "shell_port": ..., "stdin_port": ...,
               "iopub_port": ..., "hb_port": ...}

The registrar answers with a signed single-frame acknowledgement of its own choosing; the
kernel checks its signature, closes the DEALER, and writes its connection file for other
clients. No acknowledgement within the timeout, or a badly signed one, ends the start.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any

import orjson
import zmq

from async_kernel._enums import Channel
from async_kernel.wire._frames import DELIMITER
from async_kernel.wire._session import Session

if TYPE_CHECKING:
    from collections.abc import Mapping

    from async_kernel.wire._connection import RegistrationInfo

__all__ = ("RegistrationError", "register", "registration_content")

log = logging.getLogger("async_kernel")

_ORDER = (
    ("control_port", Channel.control),
    ("shell_port", Channel.shell),
    ("stdin_port", Channel.stdin),
    ("iopub_port", Channel.iopub),
    ("hb_port", Channel.heartbeat),
)


class RegistrationError(RuntimeError):
    """The registrar did not acknowledge the kernel's ports: unreachable, silent or foreign."""


def registration_content(kernel_id: str, ports: Mapping[Channel, int]) -> bytes:
    """Return the registration message's content frame: the kernel id and its five ports.

    The ports are JSON numbers, as in connection files (the spec's sketch types them `str`;
    a registrar that reads them with `int()` or puts them into a URL takes either).
    """
    content: dict[str, Any] = {"kernel_id": kernel_id}
    content |= {name: ports[channel] for name, channel in _ORDER}
    return orjson.dumps(content)


def register(
    registration: RegistrationInfo,
    ports: Mapping[Channel, int],
    *,
    timeout: float,
    context: zmq.Context[zmq.Socket[bytes]] | None = None,
) -> Any:
    """Send the kernel's ports to the registrar and wait for its acknowledgement.

    Args:
        registration: The registration file's contents.
        ports: The bound port of each of the five sockets.
        timeout: Seconds to wait for the acknowledgement.
        context: The zmq context for the DEALER (a new one by default).

    Returns:
        The acknowledgement's content: what the registrar sent, decoded if it is JSON.

    Raises:
        RegistrationError: No acknowledgement in time, or one that is not signed with the
            registration file's key.
    """
    session = Session(registration.key, signature_scheme=registration.signature_scheme)
    content = registration_content(registration.kernel_id, ports)
    url = registration.url()
    own_context = context is None
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context() if context is None else context
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        if ":" in registration.registration_ip and registration.transport == "tcp":
            sock.setsockopt(zmq.IPV6, 1)
        try:
            sock.connect(url)
        except zmq.ZMQError as e:
            msg = f"cannot connect to the registrar at {url}: {e}"
            raise RegistrationError(msg) from e
        sock.send_multipart([DELIMITER, session.sign([content]), content])
        log.info("sent the kernel's ports to the registrar at %s", url)
        if not sock.poll(int(timeout * 1000)):
            msg = (
                f"no acknowledgement from the registrar at {url} within {timeout:g} s: is it "
                "running and reachable from this host? (Kernel.registration_timeout sets the wait)"
            )
            raise RegistrationError(msg)
        frames = sock.recv_multipart()
    finally:
        sock.close(linger=0)
        if own_context:
            ctx.term()
    return _acknowledgement(session, frames, url)


def _acknowledgement(session: Session, frames: list[bytes], url: str) -> Any:
    try:
        delimiter = frames.index(DELIMITER)
        signature, content = frames[delimiter + 1], frames[delimiter + 2]
    except (ValueError, IndexError):
        msg = f"the registrar at {url} answered with frames that are not a signed message"
        raise RegistrationError(msg) from None
    if not hmac.compare_digest(signature, session.sign([content])):
        msg = f"the registrar at {url} acknowledged with a wrong signature (another key?)"
        raise RegistrationError(msg)
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:  # its content is the registrar's choice; the signature counts
        return content
