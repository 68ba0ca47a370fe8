"""The kernel: its threads, its settings, and the way messages come in and go out.

`Kernel.run()` runs the shell `Caller` on the main thread, starts the `Control` and `Shell`
callers and the socket threads, and waits for shutdown. Each request goes
socket thread → `Kernel.on_message` → `Dispatcher` → a caller → `JobRunner` (busy, the handler
named like the msg_type in `handlers.RequestHandlers`, always a reply, idle).
"""

from __future__ import annotations

import builtins
import getpass
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, cast

import anyio
from traitlets import Bool, CaselessStrEnum, Float, Unicode, UseEnum, observe
from traitlets.config import SingletonConfigurable

from async_kernel import routing
from async_kernel.caller import Caller
from async_kernel.comm import install_comms
from async_kernel.connection import read_connection_file, write_connection_file
from async_kernel.dispatcher import Dispatcher, all_concurrency_run_modes, run_mode_for
from async_kernel.enums import Channel, KernelConcurrencyMode, MsgType, RunMode
from async_kernel.handlers import RequestHandlers
from async_kernel.interrupts import Interrupter
from async_kernel.iostream import FDCapture, OutStream
from async_kernel.job import Job
from async_kernel.magics import KernelMagics
from async_kernel.runner import JobRunner
from async_kernel.session import Message, Session
from async_kernel.sockets import SocketHub
from async_kernel.stdin import StdinBroker
from async_kernel.subshells import SubshellManager, UnknownSubshellError

if TYPE_CHECKING:
    from collections.abc import Callable

    from async_kernel.caller import Backend
    from async_kernel.comm import KernelCommManager
    from async_kernel.shell import AsyncInteractiveShell

__all__ = ("Kernel",)

log = logging.getLogger("async_kernel")
_UNSET: Any = object()


def _pid_exists(pid: int) -> bool:
    """Whether a process `pid` exists (assumed on Windows, where signal 0 is not a probe)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to someone else
        return True
    return True


class Kernel(SingletonConfigurable):
    """A Jupyter kernel for Python that handles requests concurrently."""

    connection_file = Unicode("", help="The connection file written by the launcher.").tag(
        config=True
    )
    """Path of the connection file."""
    backend = CaselessStrEnum(
        ["asyncio", "trio"], default_value="asyncio", help="The async library of the event loops."
    ).tag(config=True)
    """`asyncio` or `trio`: the event loop that runs cells and top-level await."""
    concurrency_mode = UseEnum(
        KernelConcurrencyMode,
        default_value=KernelConcurrencyMode.default,
        help="`default` runs requests concurrently; `blocking` one at a time, like ipykernel.",
    ).tag(config=True)
    """The kernel-wide run-mode policy; can be changed while the kernel runs."""
    thread_parent_policy = UseEnum(
        routing.ThreadParentPolicy,
        default_value=routing.ThreadParentPolicy.latest,
        help="Where output of plain threads goes: `latest` cell, or the `starter` cell.",
    ).tag(config=True)
    """Where output from plain threads goes (see `async_kernel.routing`)."""
    capture_fd_output = Bool(True, help="Capture output written to file descriptors 1 and 2.").tag(
        config=True
    )
    """Capture output of C code, `os.system` and subprocesses."""
    flush_interval = Float(0.1, help="Seconds between flushes of buffered stream output.").tag(
        config=True
    )
    """How long stream output is gathered before it is sent."""
    switch_interval = Float(
        0.0002, help="sys.setswitchinterval for the kernel process (seconds)."
    ).tag(config=True)
    """How often a busy thread hands the GIL over; short, so the socket thread keeps up."""
    log_level = CaselessStrEnum(
        ["DEBUG", "INFO", "WARNING", "ERROR"], default_value="WARNING", help="Log level."
    ).tag(config=True)
    """The level of the kernel's own log (written to the original stderr)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        Kernel._instance = self  # `Kernel.instance()` and `get_kernel()` find the running kernel
        self.connection = (
            read_connection_file(self.connection_file) if self.connection_file else None
        )
        # Ports given as 0 are chosen when binding and written back to the file.
        self._ports_to_choose = self.connection is not None and any(
            port <= 0 for port in self.connection.ports.values()
        )
        key = self.connection.key if self.connection else b""
        scheme = self.connection.signature_scheme if self.connection else "hmac-sha256"
        self.session = Session(key, signature_scheme=scheme)
        self.interrupter = Interrupter()
        self.stdin = StdinBroker(self)
        self.subshells = SubshellManager(cast("Backend", self.backend))
        self.handlers = RequestHandlers(self)
        self.runner = JobRunner(self, self.handlers)
        self.dispatcher = Dispatcher(
            self.runner.run,
            self._caller_for,
            self._blocking_caller_for,
            run_now=self.runner.run_now,
            is_sync=self.runner.is_sync,
        )
        self.streams: list[OutStream] = []
        self._captures: list[FDCapture] = []
        self._stop_event: anyio.Event | None = None
        self._exit_code = 0
        self._topic = f"kernel.{self.session.session_id}.".encode()
        self.shell: AsyncInteractiveShell
        self.hub: SocketHub
        self.comm_manager: KernelCommManager
        self.main_caller: Caller
        self.control_caller: Caller
        self.shell_caller: Caller

    @observe("thread_parent_policy")
    def _policy_changed(self, change: dict[str, Any]) -> None:
        routing.set_thread_parent_policy(change["new"])

    # --- run-mode introspection ------------------------------------------------------------

    def get_run_mode(
        self, msg_type: str, *, channel: Channel = Channel.shell, job: Job | None = None
    ) -> RunMode | None:
        """Return the mode a request of `msg_type` on `channel` (or this `job`) runs in."""
        return run_mode_for(msg_type, channel, self.concurrency_mode, job)

    @staticmethod
    def all_concurrency_run_modes() -> list[dict[str, str]]:
        """Return the run-mode table: rows of concurrency mode, channel, msg_type, run mode."""
        return all_concurrency_run_modes()

    # --- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        """Run the kernel until it is shut down; return the process exit code."""
        if self.connection is None:
            msg = "no connection file: start the kernel with -f CONNECTION_FILE"
            raise RuntimeError(msg)
        self.interrupter.install()
        # The socket thread gives up the GIL at every send; with the default 5 ms switch
        # interval a busy cell would let it send one message per 5 ms (a GIL convoy), and
        # replies and output would arrive in late clumps.
        sys.setswitchinterval(self.switch_interval)
        # Figures show inline, as in every Jupyter kernel (matplotlib-inline comes with IPython).
        os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        anyio.run(self._main, backend=self.backend)
        return self._exit_code

    async def _main(self) -> None:
        assert self.connection is not None
        self._stop_event = anyio.Event()
        async with Caller.attach(name="MainThread", protected=True) as main:
            self.main_caller = main
            backend = cast("Backend", self.backend)
            self.control_caller = Caller.start_new(name="Control", backend=backend, protected=True)
            self.interrupter.offload = self.control_caller.call_direct
            self.shell_caller = Caller.start_new(name="Shell", backend=backend, protected=True)
            self._setup_output()
            self._setup_shell()
            routing.set_thread_parent_policy(self.thread_parent_policy)
            self.hub = SocketHub(self.connection, self.session, self.on_message)
            self.hub.start()
            if self._ports_to_choose:
                write_connection_file(self.connection_file, self.connection)
            self.control_caller.call_soon(self._watch_parent)
            await self._stop_event.wait()
        self._teardown()

    def _setup_output(self) -> None:
        log_stream: Any = sys.__stderr__
        for fd, name in ((1, "stdout"), (2, "stderr")):
            stream = OutStream(name, self._publish_stream, flush_interval=self.flush_interval)  # pyright: ignore[reportArgumentType]
            self.streams.append(stream)
            if self.capture_fd_output and os.name == "posix":
                original = sys.__stdout__ if fd == 1 else sys.__stderr__
                if original is not None:
                    original.flush()  # what Python buffered goes out before the fd is taken
                capture = FDCapture(fd, stream, parent=self._fd_parent)
                try:
                    capture.start()
                except OSError:
                    log.exception("could not capture fd %d; its output is not captured", fd)
                    continue
                self._captures.append(capture)
                if fd == 2 and capture.original_fd is not None:
                    log_stream = os.fdopen(os.dup(capture.original_fd), "w", buffering=1)
        handler = logging.StreamHandler(log_stream)
        handler.setFormatter(
            logging.Formatter("[async-kernel %(levelname)s %(asctime)s] %(message)s")
        )
        log.addHandler(handler)
        log.setLevel(self.log_level)
        log.propagate = False
        sys.stdout, sys.stderr = self.streams  # pyright: ignore[reportAttributeAccessIssue]

    def _setup_shell(self) -> None:
        from async_kernel.shell import AsyncInteractiveShell

        self.shell = AsyncInteractiveShell.instance(parent=self, kernel=self)
        self.shell.user_ns.setdefault("RunMode", RunMode)
        self.shell.register_magics(KernelMagics)
        self.comm_manager = install_comms(self)
        builtins.input = self.stdin.input
        getpass.getpass = self.stdin.getpass

    def _fd_parent(self) -> Job | None:
        """The parent of output written to fd 1 and 2: the running cell, if only one runs.

        A descriptor does not say which thread wrote to it; with one cell running (in a
        subshell or a `##thread` cell, say) that cell is the writer, else the routing rules
        decide (the latest main-shell cell).
        """
        running = self.interrupter.running()
        return running[0].job if len(running) == 1 else None

    def _teardown(self) -> None:
        """Flush, stop subshells and sockets, restore the fds, close the history session.

        Each step runs even if an earlier one failed; failures are logged.
        """
        steps: list[Callable[[], object]] = [stream.flush for stream in self.streams]
        steps += [self.subshells.stop_all, self.hub.stop]
        steps += [capture.stop for capture in self._captures]
        steps.append(self.shell.history_manager.end_session)
        for step in steps:
            try:
                step()
            except Exception:
                log.exception("shutdown step %r failed", step)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__

    async def _watch_parent(self) -> None:
        """Stop when the process that launched the kernel is gone.

        Gone means the parent changed, or the launcher that jupyter_client names in
        `JPY_PARENT_PID` no longer exists: it can die before this watch begins, when the kernel
        already has a new parent.
        """
        parent = os.getppid()
        named = os.environ.get("JPY_PARENT_PID", "")
        launcher = int(named) if named.isdigit() and int(named) not in (0, 1, parent) else None
        while True:
            if os.getppid() != parent or (launcher is not None and not _pid_exists(launcher)):
                log.warning("the parent process %s is gone: stopping", launcher or parent)
                self.stop()
                return
            await anyio.sleep(1)

    def stop(self, exit_code: int = 0) -> None:
        """Ask the kernel to stop (from any thread)."""
        self._exit_code = exit_code
        if self._stop_event is not None:
            self.main_caller.call_direct(self._stop_event.set)

    # --- messages in -----------------------------------------------------------------------

    def on_message(self, channel: Channel, msg: Message) -> None:
        """Take a verified message from a socket thread and dispatch it."""
        if channel is Channel.stdin:
            if msg.msg_type == MsgType.input_reply:
                self.stdin.on_reply(msg)
            return
        job = Job(msg, channel, subshell_id=msg.header.get("subshell_id") or None)
        mode = run_mode_for(msg.msg_type, channel, self.concurrency_mode, job)
        if mode is None:
            log.warning("unknown message type %r on %s", msg.msg_type, channel)
            job.state["reject"] = f"unknown message type {msg.msg_type!r} on the {channel} channel"
            mode = RunMode.blocking
        elif job.subshell_id is not None and job.subshell_id not in self.subshells:
            job.state["reject"] = str(UnknownSubshellError(job.subshell_id))
            mode = RunMode.blocking
        job.run_mode = mode
        self.dispatcher.next_seq(job)
        self.dispatcher.submit(job)

    def _caller_for(self, job: Job, main: Caller | None = None) -> Caller:
        """The caller of `job`: control's, its subshell's, else `main` (the main shell's)."""
        if job.channel is Channel.control:
            return self.control_caller
        if job.subshell_id is not None and "reject" not in job.state:
            return self.subshells.caller(job.subshell_id)
        return main or self.main_caller

    def _blocking_caller_for(self, job: Job) -> Caller:
        """Where a `blocking` request that is not user code runs: off the main thread."""
        return self._caller_for(job, self.shell_caller)

    # --- messages out ----------------------------------------------------------------------

    def publish(
        self,
        msg_type: str,
        content: dict[str, Any],
        *,
        parent: Job | None = _UNSET,
        metadata: dict[str, Any] | None = None,
        buffers: list[bytes] | None = None,
    ) -> None:
        """Publish an iopub message from any thread; the parent defaults to the routed one."""
        if parent is _UNSET:
            parent = routing.current_parent()
        extra = (
            {"subshell_id": parent.subshell_id}
            if parent is not None and parent.subshell_id
            else None
        )
        frames = self.session.serialize(
            msg_type,
            content,
            parent=parent.msg if parent is not None else None,
            metadata=metadata,
            buffers=buffers,
            idents=[self._topic + msg_type.encode()],
            header_extra=extra,
        )
        self.hub.send(Channel.iopub, frames)

    def send_reply(
        self,
        job: Job,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Send a reply to `job` on the socket it came from."""
        extra = {"subshell_id": job.subshell_id} if job.subshell_id else None
        frames = self.session.serialize(
            msg_type,
            content,
            parent=job.msg,
            metadata=metadata,
            idents=job.ident,
            header_extra=extra,
        )
        self.hub.send(job.channel, frames)

    def _publish_stream(self, name: str, text: str, parent: Job | None) -> None:
        self.publish("stream", {"name": name, "text": text}, parent=parent)

    def flush_output(self) -> None:
        """Send all buffered output now, including output written to the captured fds."""
        for capture in self._captures:
            capture.drain()
        for stream in self.streams:
            stream.flush()

    def get_parent(self, channel: str = "shell") -> dict[str, Any]:
        """Return the current request as a message dict (what the Output widget asks for)."""
        job = routing.current_parent()
        return job.msg.to_dict() if job is not None else {}
