"""The kernel: its settings, its lifecycle, and the wiring of the parts that handle messages.

`Kernel.run()` runs the main shell's `Caller` on the main thread, starts the `Control` and
`Shell` callers and the socket thread, and waits for shutdown. A request travels
socket thread → `Dispatcher` → a caller → `JobRunner` → the handler named like its msg_type
→ `Outbox` → socket thread; none of those parts knows the kernel.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import anyio
from traitlets import Bool, CaselessStrEnum, Float, Unicode, UseEnum, observe
from traitlets.config import SingletonConfigurable

from async_kernel._enums import Channel, KernelConcurrencyMode, RunMode
from async_kernel._patches import ProcessPatches
from async_kernel.callers._caller import Caller
from async_kernel.output import _routing as routing
from async_kernel.output._comm import KernelCommManager
from async_kernel.output._stdin import StdinBroker
from async_kernel.output._stdio import StdIO
from async_kernel.requests._dispatcher import (
    Aborts,
    Callers,
    Dispatcher,
    all_concurrency_run_modes,
    run_mode_for,
)
from async_kernel.requests._handlers import RequestHandlers
from async_kernel.requests._interrupts import Interrupter
from async_kernel.requests._runner import JobRunner
from async_kernel.requests._subshells import SubshellManager
from async_kernel.wire._connection import read_connection_file, write_connection_file
from async_kernel.wire._outbox import Outbox
from async_kernel.wire._session import Session
from async_kernel.wire._sockets import SocketHub

if TYPE_CHECKING:
    from async_kernel.callers._caller import Backend
    from async_kernel.ipython._shell import AsyncInteractiveShell
    from async_kernel.wire._connection import ConnectionInfo
    from async_kernel.wire._job import Job

__all__ = ("Kernel", "get_kernel")

log = logging.getLogger("async_kernel")


class Kernel(SingletonConfigurable):
    """A Jupyter kernel for Python that handles requests concurrently."""

    connection_file = Unicode("", help="The connection file written by the launcher.").tag(
        config=True
    )
    """Path of the connection file."""
    backend: Backend = CaselessStrEnum(  # pyright: ignore[reportAssignmentType]
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
    """Where output from plain threads goes (see `ThreadParentPolicy`)."""
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
        """Read the connection file (if one is set) and build the session.

        Raises:
            ConnectionFileError: The connection file cannot be used.
        """
        super().__init__(**kwargs)
        Kernel._instance = self  # `get_kernel()` finds the running kernel
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
        """Signs and verifies messages."""
        self.interrupter = Interrupter()
        """Interrupts running cells (SIGINT, `interrupt_request`, timeouts)."""
        self.subshells = SubshellManager(self.backend)
        """The subshells (JEP 91): `create()`, `ids()`, `caller(id)`, `delete(id)`."""
        self.patches = ProcessPatches()
        """What the kernel changed in the interpreter, undone when it stops."""
        self.comm_manager = KernelCommManager()
        """The comm manager (`comm.get_comm_manager()` while the kernel runs)."""
        self._stop_event: anyio.Event | None = None
        self._exit_code = 0
        self.main_caller: Caller
        self.control_caller: Caller
        self.shell_caller: Caller
        self.hub: SocketHub
        self.outbox: Outbox
        self.stdio: StdIO
        self.shell: AsyncInteractiveShell
        self.handlers: RequestHandlers

    @observe("thread_parent_policy")
    def _policy_changed(self, change: dict[str, Any]) -> None:
        routing.set_thread_parent_policy(change["new"])

    def get_run_mode(
        self, msg_type: str, *, channel: Channel = Channel.shell, job: Job | None = None
    ) -> RunMode | None:
        """Return the mode a request of `msg_type` on `channel` (or this `job`) runs in."""
        return run_mode_for(msg_type, channel, self.concurrency_mode, job)

    @staticmethod
    def all_concurrency_run_modes() -> list[dict[str, str]]:
        """Return the run-mode table: rows of concurrency mode, channel, msg_type, run mode."""
        return all_concurrency_run_modes()

    @property
    def kernel_info(self) -> dict[str, Any]:
        """The content of this kernel's `kernel_info_reply`."""
        return self.handlers.kernel_info()

    # --- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        """Run the kernel until it is shut down; return the process exit code."""
        if self.connection is None:
            msg = "no connection file: start the kernel with -f CONNECTION_FILE"
            raise RuntimeError(msg)
        try:
            anyio.run(self._main, backend=self.backend)
        finally:
            self.patches.restore()
        return self._exit_code

    async def _main(self) -> None:
        assert self.connection is not None
        self._stop_event = anyio.Event()
        async with Caller.attach(name="MainThread", protected=True) as main:
            self.main_caller = main
            self.control_caller = Caller.start_new(
                name="Control", backend=self.backend, protected=True
            )
            self.interrupter.offload = self.control_caller.call_direct
            self.shell_caller = Caller.start_new(name="Shell", backend=self.backend, protected=True)
            self._wire(self.connection)
            if self.connection.key_generated:
                log.warning(
                    "the connection file %s has no key: messages are signed with a random key, "
                    'so no client can talk to this kernel. Give the file a key (or "key": '
                    '"" to disable signing).',
                    self.connection_file,
                )
            self.hub.start()
            if self._ports_to_choose:
                write_connection_file(self.connection_file, self.connection)
            self.control_caller.call_soon(self._watch_parent)
            await self._stop_event.wait()
        self._teardown()

    def _wire(self, connection: ConnectionInfo) -> None:
        """Build the message path and install the process-wide patches."""
        from async_kernel.ipython._magics import KernelMagics
        from async_kernel.ipython._shell import AsyncInteractiveShell

        self.hub = SocketHub(connection, self.session)
        self.outbox = Outbox(self.session, self.hub.send, routing.current_parent)
        self.stdio = StdIO(
            self.outbox.stream,
            flush_interval=self.flush_interval,
            capture_fds=self.capture_fd_output,
            fd_parent=self._fd_parent,
        )
        _setup_log(self.stdio.start(), self.log_level)
        self.shell = AsyncInteractiveShell.instance(parent=self, kernel=self, outbox=self.outbox)
        self.shell.user_ns.setdefault("RunMode", RunMode)
        self.shell.register_magics(KernelMagics(self.shell, subshell_ids=self.subshells.ids))
        stdin = StdinBroker(self.outbox, self.stdio.flush)
        aborts = Aborts()
        self.subshells.on_delete = aborts.forget
        self.handlers = RequestHandlers(
            shell=self.shell,
            outbox=self.outbox,
            interrupter=self.interrupter,
            aborts=aborts,
            subshells=self.subshells,
            comms=self.comm_manager,
            timers=self.control_caller,
            flush=self.stdio.flush,
            stop=self.stop,
            backend=self.backend,
        )
        callers = Callers(self.main_caller, self.control_caller, self.shell_caller, self.subshells)
        dispatcher = Dispatcher(
            JobRunner(self.outbox, self.handlers),
            callers,
            aborts,
            concurrency_mode=lambda: self.concurrency_mode,
            on_input_reply=stdin.on_reply,
            refusals=self.hub.drops,  # one log of bad input, flushed when the sockets close
        )
        self.hub.on_message = dispatcher.receive
        routing.set_thread_parent_policy(self.thread_parent_policy)
        self.patches.install(
            interrupter=self.interrupter,
            stdin=stdin,
            stdio=self.stdio,
            shell=self.shell,
            comms=self.comm_manager,
            outbox=self.outbox,
            switch_interval=self.switch_interval,
        )

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
        for step in (
            self.stdio.flush,
            self.subshells.stop_all,
            self.stdio.stop,
            self.hub.stop,
            self.shell.history_manager.end_session,
        ):
            try:
                step()
            except Exception:
                log.exception("shutdown step %r failed", step)

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

    def flush_output(self) -> None:
        """Send all buffered output now, including output written to the captured fds."""
        self.stdio.flush()

    def get_parent(self, channel: str = "shell") -> dict[str, Any]:
        """Return the current request as a message dict (what the Output widget asks for)."""
        job = routing.current_parent()
        return job.msg.to_dict() if job is not None else {}


def get_kernel() -> Kernel:
    """Return the running kernel.

    Raises:
        RuntimeError: No kernel runs in this process.
    """
    if not Kernel.initialized():
        msg = "no async-kernel runs in this process"
        raise RuntimeError(msg)
    return Kernel.instance()


def _setup_log(stream: Any, level: str) -> None:
    """Send the kernel's own log to `stream` (the process's original stderr)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[async-kernel %(levelname)s %(asctime)s] %(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


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
