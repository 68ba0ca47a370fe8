"""A test-side client that sends hand-made frames to a kernel, broken ones included.

`RawClient` signs with the connection's key and scheme (computed here with `hmac`, not with
the kernel's code), sends on DEALER sockets of shell, control and stdin (shell and stdin share
an identity, as jupyter_client's do), and listens on iopub. Each
request carries a `test_tag` in its header; replies and iopub messages are filed under the tag
of their parent header, so that even a request whose `msg_id` is missing or not a string can
be matched with what came back. Every wait has a timeout.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import zmq

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("TIMEOUT", "Answer", "RawClient", "url")

TIMEOUT = 20.0
"""Seconds any single wait may take."""

DELIMITER = b"<IDS|MSG>"


def url(info: dict[str, Any], channel: str) -> str:
    """The zmq endpoint of `channel` in a connection info dict."""
    port = info[f"{channel}_port"]
    if info["transport"] == "ipc":
        return f"ipc://{info['ip']}-{port}"
    return f"tcp://{info['ip']}:{port}"


@dataclass
class Answer:
    """What came back for one request."""

    reply: dict[str, Any] | None = None
    """The reply (header, parent_header, metadata, content), once it came."""
    iopub: list[dict[str, Any]] = field(default_factory=list)
    """The iopub messages whose parent is the request, in arrival order."""
    stdin: list[dict[str, Any]] = field(default_factory=list)
    """The input requests the request made."""

    @property
    def states(self) -> list[str]:
        """The `execution_state`s of the request's status messages."""
        return [
            m["content"]["execution_state"]
            for m in self.iopub
            if m["header"]["msg_type"] == "status"
        ]


class RawClient:
    """Sends signed (or deliberately broken) frames; collects answers by the request's tag.

    Args:
        info: The kernel's connection info (`KernelManager.get_connection_info()`).
    """

    def __init__(self, info: dict[str, Any]) -> None:
        key = info["key"]
        self.key: bytes = key.encode() if isinstance(key, str) else key
        self.digest = getattr(hashlib, info["signature_scheme"].removeprefix("hmac-"))
        self.context = zmq.Context()
        self.sockets: dict[str, zmq.Socket[bytes]] = {}
        identity = f"raw-{uuid.uuid4().hex}".encode()
        for channel in ("shell", "control", "stdin"):
            sock = self.context.socket(zmq.DEALER)
            sock.linger = 0
            if channel != "control":
                sock.setsockopt(zmq.IDENTITY, identity)
            sock.connect(url(info, channel))
            self.sockets[channel] = sock
        self.iopub = self.context.socket(zmq.SUB)
        self.iopub.linger = 0
        self.iopub.setsockopt(zmq.SUBSCRIBE, b"")
        self.iopub.connect(url(info, "iopub"))
        self._poller = zmq.Poller()
        for sock in (*self.sockets.values(), self.iopub):
            self._poller.register(sock, zmq.POLLIN)
        self._answers: dict[str, Answer] = collections.defaultdict(Answer)
        self._counter = itertools.count()
        self.welcomed = False
        self.wait_until(lambda: self.welcomed, "the iopub welcome")

    def close(self) -> None:
        """Close the sockets."""
        for sock in (*self.sockets.values(), self.iopub):
            sock.close(linger=0)
        self.context.term()

    # --- sending ---------------------------------------------------------------------------

    def sign(self, parts: list[bytes]) -> bytes:
        """The hex HMAC of the four JSON frames (empty when the key is empty)."""
        if not self.key:
            return b""
        mac = hmac.new(self.key, digestmod=self.digest)
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode()

    def header(self, msg_type: Any, **fields: Any) -> dict[str, Any]:
        """A well-formed header for `msg_type`, with a fresh `test_tag` (and `fields`)."""
        return {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "session": "raw-client",
            "username": "test",
            "date": "2024-01-01T00:00:00.000000Z",
            "version": "5.4",
            "test_tag": f"t{next(self._counter)}-{uuid.uuid4().hex[:8]}",
        } | fields

    def send_frames(
        self,
        channel: str,
        header: bytes,
        parent: bytes = b"{}",
        metadata: bytes = b"{}",
        content: bytes = b"{}",
        *,
        signature: bytes | None = None,
    ) -> None:
        """Send four JSON frames as they are, correctly signed unless `signature` is given."""
        parts = [header, parent, metadata, content]
        sig = self.sign(parts) if signature is None else signature
        self.sockets[channel].send_multipart([DELIMITER, sig, *parts])

    def send(
        self,
        channel: str,
        msg_type: Any,
        content: Any = None,
        *,
        metadata: Any = None,
        header: dict[str, Any] | None = None,
        parent: Any = None,
    ) -> str:
        """Send a correctly signed message whose parts may hold any JSON; return its tag."""
        full = self.header(msg_type) | (header or {})
        self.send_frames(
            channel,
            orjson.dumps(full),
            orjson.dumps({} if parent is None else parent),
            orjson.dumps({} if metadata is None else metadata),
            orjson.dumps({} if content is None else content),
        )
        return full["test_tag"]

    # --- receiving -------------------------------------------------------------------------

    def answer(self, tag: str) -> Answer:
        """What came back for the request tagged `tag` so far."""
        return self._answers[tag]

    def wait_until(self, check: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
        """Receive until `check()` is truthy; return it.

        Raises:
            AssertionError: It was not within `timeout` seconds; the message says `what`.
        """
        deadline = time.monotonic() + timeout
        while not (result := check()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                msg = f"timed out after {timeout}s waiting for {what}"
                raise AssertionError(msg)
            for sock, _ in self._poller.poll(int(min(remaining, 0.5) * 1000)):
                while sock.poll(0):
                    self._file(sock, sock.recv_multipart())
        return result

    def wait_done(self, tag: str, *, reply: bool = True, timeout: float = TIMEOUT) -> Answer:
        """Wait for the reply (if one is due) and the `idle` of request `tag`."""
        answer = self.answer(tag)
        if reply:
            self.wait_until(lambda: answer.reply, f"the reply to {tag}", timeout)
        self.wait_until(lambda: "idle" in answer.states, f"idle after {tag}", timeout)
        return answer

    def _file(self, sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
        i = frames.index(DELIMITER)
        signature, *parts = frames[i + 1 : i + 6]
        assert hmac.compare_digest(signature, self.sign(parts)), "a badly signed answer"
        header, parent, metadata, content = (orjson.loads(p) for p in parts)
        msg = {"header": header, "parent_header": parent, "metadata": metadata, "content": content}
        if header["msg_type"] == "iopub_welcome":
            self.welcomed = True
            return
        tag = parent.get("test_tag")
        if not isinstance(tag, str):
            return
        if sock is self.iopub:
            self._answers[tag].iopub.append(msg)
        elif sock is self.sockets["stdin"]:
            self._answers[tag].stdin.append(msg)
        else:
            assert self._answers[tag].reply is None, f"two replies to {tag}"
            self._answers[tag].reply = msg
