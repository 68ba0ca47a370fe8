"""A small test-side driver for a real kernel: send requests, sort what comes back by request.

`Driver` reads the shell, control and iopub sockets of a `BlockingKernelClient` itself (one
thread, a zmq poller), files every message under the `msg_id` of its parent and numbers them
in arrival order, so a test can wait for any protocol event of any request and compare when
events arrived. Every wait has a timeout and fails with a message that says what was missing.
"""

from __future__ import annotations

import itertools
import textwrap
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq

if TYPE_CHECKING:
    from collections.abc import Callable

    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager

__all__ = ("TIMEOUT", "Driver", "Received", "code")

TIMEOUT = 15.0
"""Seconds any single wait may take before the test fails."""


@dataclass
class Received:
    """What came back for one request."""

    iopub: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """Iopub messages whose parent is the request, with their arrival numbers."""
    reply: tuple[int, dict[str, Any]] | None = None
    """The reply and its arrival number, once it came."""


class Driver:
    """Sends requests to a kernel and collects the replies and iopub messages of each."""

    def __init__(self, kc: BlockingKernelClient) -> None:
        self.kc = kc
        self._arrival = itertools.count(1)
        self._by_parent: dict[str, Received] = defaultdict(Received)
        self.debug_events: list[tuple[int, dict[str, Any]]] = []
        """Every `debug_event` that arrived (whatever its parent), with its arrival number."""
        self._channels = {
            ch.socket: ch for ch in (kc.shell_channel, kc.control_channel, kc.iopub_channel)
        }
        self._poller = zmq.Poller()
        for socket in self._channels:
            self._poller.register(socket, zmq.POLLIN)
        self.drain()

    # --- sending ---------------------------------------------------------------------------

    def send(
        self,
        msg_type: str,
        content: dict[str, Any],
        *,
        channel: str = "shell",
        metadata: dict[str, Any] | None = None,
        header: dict[str, Any] | None = None,
    ) -> str:
        """Send a request; return its msg_id."""
        msg = self.kc.session.msg(msg_type, content, metadata=metadata or {})
        msg["header"].update(header or {})
        target = self.kc.control_channel if channel == "control" else self.kc.shell_channel
        target.send(msg)
        return msg["header"]["msg_id"]

    def execute(
        self,
        code: str,
        *,
        metadata: dict[str, Any] | None = None,
        header: dict[str, Any] | None = None,
        user_expressions: dict[str, str] | None = None,
    ) -> str:
        """Send an execute_request; return its msg_id."""
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": user_expressions or {},
            "allow_stdin": False,
            "stop_on_error": False,
        }
        return self.send("execute_request", content, metadata=metadata, header=header)

    def comm_msg(self, comm_id: str, data: dict[str, Any]) -> str:
        """Send a comm_msg to an open comm on the shell channel; return its msg_id."""
        return self.send("comm_msg", {"comm_id": comm_id, "data": data})

    # --- receiving -------------------------------------------------------------------------

    def drain(self) -> None:
        """File every message that is already waiting."""
        self._pump(0)

    def _pump(self, timeout: float) -> None:
        for socket, _ in self._poller.poll(int(timeout * 1000)):
            channel = self._channels[socket]
            while channel.msg_ready():
                msg = channel.get_msg(timeout=0)
                parent = msg["parent_header"].get("msg_id")
                n = next(self._arrival)
                if msg["msg_type"] == "debug_event":
                    self.debug_events.append((n, msg))
                if parent is None:
                    continue
                entry = self._by_parent[parent]
                if socket is self.kc.iopub_channel.socket:
                    entry.iopub.append((n, msg))
                else:
                    entry.reply = (n, msg)

    def wait_until(self, check: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
        """Receive until `check()` returns something truthy; return it.

        Raises:
            AssertionError: Nothing truthy within `timeout` seconds; says `what` was awaited.
        """
        deadline = time.monotonic() + timeout
        while not (result := check()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                msg = f"timed out after {timeout}s waiting for {what}"
                raise AssertionError(msg)
            self._pump(min(remaining, 0.5))
        return result

    def got(self, msg_id: str) -> Received:
        """What has arrived so far for request `msg_id`."""
        return self._by_parent[msg_id]

    def reply(self, msg_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Wait for the reply to `msg_id` and its `idle` status; return the reply."""
        self.wait_until(lambda: self.got(msg_id).reply, f"the reply to {msg_id}", timeout)
        self.wait_until(lambda: self.is_idle(msg_id), f"idle after {msg_id}", timeout)
        reply = self.got(msg_id).reply
        assert reply is not None
        return reply[1]

    def reply_number(self, msg_id: str) -> int | None:
        """The arrival number of the reply to `msg_id`, or None if it has not come."""
        reply = self.got(msg_id).reply
        return None if reply is None else reply[0]

    def first(self, msg_id: str, msg_type: str) -> tuple[int, dict[str, Any]] | None:
        """The first iopub message of `msg_type` for `msg_id` (with its number), if any."""
        for n, msg in self.got(msg_id).iopub:
            if msg["msg_type"] == msg_type:
                return n, msg
        return None

    def wait_for(
        self, msg_id: str, msg_type: str, timeout: float = TIMEOUT
    ) -> tuple[int, dict[str, Any]]:
        """Wait for an iopub message of `msg_type` for `msg_id`; return it with its number."""
        return self.wait_until(
            lambda: self.first(msg_id, msg_type), f"{msg_type} of {msg_id}", timeout
        )

    def is_idle(self, msg_id: str) -> bool:
        """Whether `status: idle` arrived for `msg_id`."""
        return self._idle(msg_id) is not None

    def idle_number(self, msg_id: str) -> int:
        """The arrival number of the `status: idle` of `msg_id` (which must have arrived).

        Compare it with other iopub messages only: iopub keeps the kernel's order, while
        messages on different sockets may arrive in either order.
        """
        n = self._idle(msg_id)
        assert n is not None, f"no idle for {msg_id} yet"
        return n

    def _idle(self, msg_id: str) -> int | None:
        for n, m in self.got(msg_id).iopub:
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                return n
        return None

    def stdout(self, msg_id: str) -> str:
        """All stdout text that arrived for `msg_id` so far."""
        return "".join(
            m["content"]["text"]
            for _, m in self.got(msg_id).iopub
            if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
        )

    def wait_stdout(self, msg_id: str, text: str, timeout: float = TIMEOUT) -> str:
        """Wait until the stdout of `msg_id` contains `text`; return all of it."""
        self.wait_until(
            lambda: text in self.stdout(msg_id), f"{text!r} on stdout of {msg_id}", timeout
        )
        return self.stdout(msg_id)

    def run(self, code: str, timeout: float = TIMEOUT, **kwargs: Any) -> str:
        """Execute `code`, wait until it is done, check it succeeded; return its stdout."""
        msg_id = self.execute(code, **kwargs)
        reply = self.reply(msg_id, timeout)
        content = reply["content"]
        assert content["status"] == "ok", (code, content, self.errors(msg_id))
        return self.stdout(msg_id)

    def create_subshell(self) -> str:
        """Create a subshell over control; return its id."""
        reply = self.reply(self.send("create_subshell_request", {}, channel="control"))
        assert reply["content"]["status"] == "ok", reply["content"]
        return reply["content"]["subshell_id"]

    def interrupt(self, km: KernelManager, how: str) -> None:
        """Interrupt the kernel: by `"signal"` (SIGINT from the manager) or by message."""
        if how == "signal":
            km.interrupt_kernel()
        else:
            reply = self.reply(self.send("interrupt_request", {}, channel="control"))
            assert reply["content"]["status"] == "ok", reply["content"]

    def errors(self, msg_id: str) -> list[str]:
        """The `ename: evalue` of error messages for `msg_id`, and stderr text."""
        out = []
        for _, m in self.got(msg_id).iopub:
            if m["msg_type"] == "error":
                out.append(f"{m['content']['ename']}: {m['content']['evalue']}")
            elif m["msg_type"] == "stream" and m["content"]["name"] == "stderr":
                out.append(m["content"]["text"])
        return out


def code(text: str) -> str:
    """Dedent a cell's source written as an indented triple-quoted string."""
    return textwrap.dedent(text).strip("\n")
