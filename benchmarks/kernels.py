"""Kernelspecs for the benchmarked kernels and a handle that drives one kernel process.

Kernels are started by `jupyter_client.KernelManager` from kernelspecs written into a temporary
Jupyter data directory (`JUPYTER_PATH`), so async-kernel, ipykernel and the floor are launched
and spoken to by exactly the same client code. Every wait has a deadline; a kernel that dies or
stays silent raises `BenchError` instead of hanging the run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson
import zmq
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

__all__ = (
    "BOUNDS",
    "BenchError",
    "KernelDef",
    "KernelHandle",
    "KernelTimeout",
    "kernel_defs",
    "peek_reply",
    "write_kernelspecs",
)

CHANNELS = ("control", "shell", "iopub")
"""In poll order: control replies are read (and time-stamped) before a backlog of shell replies
and iopub messages, so the client's own queue does not count as control latency."""
DELIM = b"<IDS|MSG>"
#: Most messages taken from one socket per poll, so one busy channel cannot starve another.
BATCH = 256


class BenchError(Exception):
    """A kernel failed to start, died, or answered wrongly; the row shows this message."""


class KernelTimeout(BenchError):
    """A kernel did not answer before the deadline."""


@dataclass(frozen=True)
class KernelDef:
    """How to launch one kind of kernel."""

    key: str
    """Short name used on the command line (`--kernels async,ipykernel`)."""
    label: str
    """Column title in the results table."""
    argv: tuple[str, ...]
    """The kernelspec `argv`, with `{connection_file}`."""
    protocol_only: bool = False
    """True for the floor: it answers the protocol but has no comms and no output capture."""

    @property
    def spec_name(self) -> str:
        """The kernelspec directory name (prefixed so it never shadows a user's kernel)."""
        return f"bench-{self.key}"


BOUNDS = ("floor-ipython", "floor-ipython-thread")
"""The floor with IPython, and with IPython on a handler thread (see `floor.py`): not run by
default; `--kernels async,floor,floor-ipython,floor-ipython-thread` measures them."""


def kernel_defs() -> dict[str, KernelDef]:
    """Return the benchmarked kernels, in table order, all run by this Python; `BOUNDS` last."""
    floor = str(Path(__file__).with_name("floor.py").resolve())
    py, conn = sys.executable, "{connection_file}"
    defs = (
        KernelDef("async", "async-kernel", (py, "-m", "async_kernel", "start", "-f", conn)),
        KernelDef("ipykernel", "ipykernel", (py, "-m", "ipykernel_launcher", "-f", conn)),
        KernelDef("floor", "floor", (py, floor, "-f", conn), protocol_only=True),
        KernelDef(
            "floor-ipython",
            "floor + IPython",
            (py, floor, "--ipython", "-f", conn),
            protocol_only=True,
        ),
        KernelDef(
            "floor-ipython-thread",
            "floor + IPython + thread",
            (py, floor, "--ipython", "--thread", "-f", conn),
            protocol_only=True,
        ),
    )
    return {d.key: d for d in defs}


def write_kernelspecs(data_dir: Path, defs: list[KernelDef]) -> None:
    """Write one `kernels/<spec_name>/kernel.json` per kernel under `data_dir`."""
    for kdef in defs:
        spec_dir = data_dir / "kernels" / kdef.spec_name
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "argv": list(kdef.argv),
            "display_name": f"{kdef.label} (benchmark)",
            "language": "python",
            "interrupt_mode": "signal",
            "metadata": {"debugger": False},
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=2))


def peek_reply(frames: list[bytes]) -> tuple[str, str, float | None]:
    """Return `(parent msg_id, content status, header date)` of a raw reply, decoded lightly.

    The pipelined benchmark uses this to keep the client's own cost per reply small. The date
    (seconds since the epoch, None if absent) is when the kernel made the reply.
    """
    i = frames.index(DELIM)
    header = orjson.loads(frames[i + 2])
    parent = orjson.loads(frames[i + 3])
    content = orjson.loads(frames[i + 5])
    date = header.get("date")
    stamp = datetime.fromisoformat(date).timestamp() if isinstance(date, str) else None
    return parent.get("msg_id", ""), content.get("status", ""), stamp


class KernelHandle:
    """One running kernel process with a blocking client whose sockets are polled together.

    Args:
        kdef: What to launch.
        log_dir: Where the kernel's stdout and stderr go (shown in errors).
    """

    def __init__(self, kdef: KernelDef, log_dir: Path) -> None:
        self.kdef = kdef
        self.km: KernelManager | None = None
        self.kc: BlockingKernelClient | None = None
        self.kernel_info: dict[str, Any] = {}
        self.bytes_received: dict[str, int] = dict.fromkeys(CHANNELS, 0)
        # Signed messages sent to this process: tells when its replay guard is full.
        self.sent = 0
        self.broken = False
        self._log_path = log_dir / f"{kdef.key}-{time.time_ns()}.log"
        self._log: IO[bytes] | None = None
        self._sockets: dict[str, zmq.Socket[bytes]] = {}
        self._names: dict[zmq.Socket[bytes], str] = {}
        self._poller = zmq.Poller()
        self._watch: set[str] = set()
        self._replies: dict[str, tuple[float, dict[str, Any]]] = {}
        # Messages received but not yet looked at when `wait` found its match.
        self._backlog: list[tuple[str, list[bytes], float]] = []
        self._idle: dict[str, float] = {}

    def __repr__(self) -> str:
        pid = self.pid if self.km is not None else None
        return f"<KernelHandle {self.kdef.key} pid={pid} broken={self.broken}>"

    # -- life cycle --------------------------------------------------------------------------

    def start(self, timeout: float) -> float:
        """Start the kernel; return seconds from `start_kernel()` to the first kernel_info_reply.

        Afterwards iopub is known to be connected (an idle status was received).
        """
        self.km = KernelManager(kernel_name=self.kdef.spec_name)
        self.km.shutdown_wait_time = 4.0
        self._log = self._log_path.open("ab")
        t0 = time.perf_counter()
        self.km.start_kernel(stdout=self._log, stderr=self._log)
        self.kc = self.km.client()
        self.kc.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=True)
        for name in CHANNELS:
            sock = getattr(self.kc, f"{name}_channel").socket
            self._sockets[name] = sock
            self._names[sock] = name
            self._poller.register(sock, zmq.POLLIN)
        deadline = t0 + timeout
        t_reply, reply = self._first_reply(deadline)
        self.kernel_info = reply["content"]
        # iopub is a PUB/SUB pair and may join late: ask until an idle status comes through.
        while True:
            msg_id, _ = self.send("shell", "kernel_info_request")
            try:
                self.await_reply(msg_id, min(1.0, deadline - time.perf_counter()), idle=True)
                break
            except KernelTimeout:
                if time.perf_counter() > deadline:
                    raise
        self.drain()
        return t_reply - t0

    def _first_reply(self, deadline: float) -> tuple[float, dict[str, Any]]:
        ids: set[str] = set()
        while True:
            ids.add(self.send("shell", "kernel_info_request", watch=False)[0])
            resend = min(deadline, time.perf_counter() + 5.0)
            try:
                return self.wait(
                    lambda ch, msg: ch == "shell" and msg["parent_header"].get("msg_id") in ids,
                    resend - time.perf_counter(),
                )
            except KernelTimeout:
                if time.perf_counter() >= deadline:
                    raise

    def close(self) -> None:
        """Stop the channels and shut the kernel down (gracefully, then by force)."""
        if self.kc is not None:
            try:
                self.kc.stop_channels()
            except Exception as exc:
                print(f"[{self.kdef.key}] stop_channels failed: {exc!r}", file=sys.stderr)
        if self.km is not None and self.km.has_kernel:
            try:
                self.km.shutdown_kernel(now=False)
            except Exception as exc:
                print(f"[{self.kdef.key}] shutdown failed ({exc!r}); killing", file=sys.stderr)
                try:
                    self.km.shutdown_kernel(now=True)
                except Exception as exc2:
                    print(f"[{self.kdef.key}] kill failed: {exc2!r}", file=sys.stderr)
        if self._log is not None:
            self._log.close()

    @property
    def pid(self) -> int | None:
        """The kernel process id, from the provisioner."""
        provisioner = self.km.provisioner if self.km is not None else None
        return getattr(provisioner, "pid", None)

    def rss(self) -> int:
        """Resident set size of the kernel process in bytes (`VmRSS` in `/proc/<pid>/status`)."""
        if self.pid is None:
            raise BenchError("the provisioner reports no pid")
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError as exc:
            raise BenchError(f"cannot read RSS: {exc}") from exc
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchError("no VmRSS line in /proc/<pid>/status")

    def log_tail(self, lines: int = 3) -> str:
        """The last lines the kernel wrote to stdout/stderr, for error messages."""
        if self._log is not None and not self._log.closed:
            self._log.flush()
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise `BenchError` (with the kernel's last output) if the process has exited."""
        if self.km is None or not self.km.is_alive():
            raise BenchError(f"kernel process exited: {self.log_tail() or 'no output'}")

    @property
    def subshells(self) -> bool:
        """Whether the kernel advertises JEP 91 subshells."""
        return "kernel subshells" in self.kernel_info.get("supported_features", [])

    # -- sending and receiving ---------------------------------------------------------------

    def send(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any] | None = None,
        *,
        subshell_id: str | None = None,
        watch: bool = True,
        buffers: list[bytes] | None = None,
    ) -> tuple[str, float]:
        """Send a request; return its msg_id and the send time.

        Args:
            channel: `shell` or `control`.
            msg_type: The request type.
            content: The request content.
            subshell_id: Put into the header to target a subshell (JEP 91).
            watch: Remember the reply and idle status for `await_reply`.
            buffers: Binary buffers appended to the message (comm messages).
        """
        assert self.kc is not None
        msg = self.kc.session.msg(msg_type, content or {})
        if subshell_id is not None:
            msg["header"]["subshell_id"] = subshell_id
        msg_id = msg["header"]["msg_id"]
        if watch:
            self._watch.add(msg_id)
        t = time.perf_counter()
        self.kc.session.send(self._sockets[channel], msg, buffers=buffers)
        self.sent += 1
        return msg_id, t

    def prepare(
        self, msg_type: str, content: dict[str, Any] | None = None
    ) -> tuple[str, list[bytes]]:
        """Build and sign a request for `try_send`; return its msg_id and frames (not watched)."""
        assert self.kc is not None
        msg = self.kc.session.msg(msg_type, content or {})
        return msg["header"]["msg_id"], self.kc.session.serialize(msg)

    def try_send(self, channel: str, frames: list[bytes]) -> float | None:
        """Send frames from `prepare` without blocking.

        Returns:
            The send time, or None if the queue to the kernel is full (nothing was sent).
        """
        t = time.perf_counter()
        try:
            self._sockets[channel].send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return None
        self.sent += 1
        return t

    def pump(self, timeout: float) -> list[tuple[str, list[bytes], float]]:
        """Receive raw messages from every ready socket: `(channel, frames, time received)`."""
        if self._backlog:
            out, self._backlog = self._backlog, []
            return out
        out = []
        for sock, _ in self._poller.poll(max(0, int(timeout * 1000))):
            name = self._names[sock]
            for _ in range(BATCH):
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.bytes_received[name] += sum(len(f) for f in frames)
                out.append((name, frames, time.perf_counter()))
        return out

    def parse(self, channel: str, frames: list[bytes], t: float) -> dict[str, Any]:
        """Verify and decode a message with jupyter_client's session; note replies and idles."""
        assert self.kc is not None
        _, parts = self.kc.session.feed_identities(frames)
        msg = self.kc.session.deserialize(parts)
        parent_id = msg["parent_header"].get("msg_id")
        if parent_id in self._watch:
            if channel != "iopub" and msg["msg_type"].endswith("_reply"):
                self._replies[parent_id] = (t, msg)
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                self._idle[parent_id] = t
        return msg

    def wait(
        self, until: Callable[[str, dict[str, Any]], bool], timeout: float
    ) -> tuple[float, dict[str, Any]]:
        """Receive and decode messages until `until(channel, msg)` is true; return that one.

        Raises:
            KernelTimeout: Nothing matched within `timeout` seconds.
            BenchError: The kernel process exited.
        """
        deadline = time.perf_counter() + timeout
        while True:
            remaining = deadline - time.perf_counter()
            events = self.pump(min(max(remaining, 0), 0.5))
            for i, (channel, frames, t) in enumerate(events):
                msg = self.parse(channel, frames, t)
                if until(channel, msg):
                    self._backlog = events[i + 1 :]
                    return t, msg
            if not events:
                self.check_alive()
                if remaining <= 0:
                    raise KernelTimeout(f"no answer within {timeout:.3g} s")

    def await_reply(
        self, msg_id: str, timeout: float, *, idle: bool = False
    ) -> tuple[dict[str, Any], float, float | None]:
        """Wait for the reply to `msg_id` (and its idle status); return reply and arrival times."""

        def done(_channel: str, _msg: dict[str, Any]) -> bool:
            return msg_id in self._replies and (not idle or msg_id in self._idle)

        if not done("", {}):
            self.wait(done, timeout)
        self._watch.discard(msg_id)
        t_reply, reply = self._replies.pop(msg_id)
        return reply, t_reply, self._idle.pop(msg_id, None)

    def request(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any] | None = None,
        *,
        timeout: float,
        subshell_id: str | None = None,
    ) -> tuple[dict[str, Any], float, float]:
        """Send a request and wait for its reply and idle status.

        Returns:
            The reply, seconds until the reply, seconds until both reply and idle arrived.
        """
        msg_id, t0 = self.send(channel, msg_type, content, subshell_id=subshell_id)
        reply, t_reply, t_idle = self.await_reply(msg_id, timeout, idle=True)
        assert t_idle is not None
        return reply, t_reply - t0, max(t_reply, t_idle) - t0

    def run_code(self, code: str, timeout: float, *, subshell_id: str | None = None) -> None:
        """Execute `code` and raise `BenchError` unless the reply status is `ok`."""
        content = {"code": code, "silent": False, "store_history": False}
        reply, _, _ = self.request(
            "shell", "execute_request", content, timeout=timeout, subshell_id=subshell_id
        )
        if reply["content"]["status"] != "ok":
            c = reply["content"]
            raise BenchError(f"setup cell failed: {c.get('ename')}: {c.get('evalue')}")

    def drain(self, quiet: float = 0.05, timeout: float = 5.0, *, parse: bool = False) -> int:
        """Discard messages until none arrive for `quiet` seconds; return how many were read."""
        deadline = time.perf_counter() + timeout
        count = 0
        while time.perf_counter() < deadline:
            events = self.pump(quiet)
            if not events:
                break
            count += len(events)
            if parse:
                for channel, frames, t in events:
                    self.parse(channel, frames, t)
        return count
