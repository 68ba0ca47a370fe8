"""The kernel: its settings, its lifecycle, and the wiring of the parts that handle messages.

`Kernel.run()` runs the main shell's `Caller` on the main thread, starts the `Control` and
`Shell` callers and the socket thread, and waits for shutdown. A request travels
socket thread → `Dispatcher` → a caller → `JobRunner` → the handler named like its msg_type
→ `Outbox` → socket thread; none of those parts knows the kernel.
"""

from __future__ import annotations

import functools
import logging
import os
import pathlib
import re
import threading
from typing import TYPE_CHECKING, Any

import anyio
from traitlets import observe

from async_kernel._enums import Channel, RunMode
from async_kernel._kernelapi import IpykernelAPI
from async_kernel._memory import MemoryTrim
from async_kernel._parent import ParentWatch
from async_kernel._patches import ProcessPatches
from async_kernel._settings import KernelSettings
from async_kernel._threads import hide_from_debugger
from async_kernel.callers._caller import Caller
from async_kernel.callers._workers import Worker
from async_kernel.ipython._gui_loops import detach_all, main_loop_options
from async_kernel.kernelspec import runtime_dir
from async_kernel.output import _routing as routing
from async_kernel.output._comm import KernelCommManager
from async_kernel.output._stdin import StdinBroker
from async_kernel.output._stdio import StdIO
from async_kernel.requests._comms import CommRouter
from async_kernel.requests._debugfiles import CellFiles
from async_kernel.requests._debugger import Debugger
from async_kernel.requests._debugstops import post_to_stopped
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
from async_kernel.wire._connection import (
    ConnectionInfo,
    RegistrationInfo,
    read_registration_file,
    read_startup_file,
    write_connection_file,
)
from async_kernel.wire._ipykernel import KernelSession, KernelSocket
from async_kernel.wire._outbox import Outbox
from async_kernel.wire._registration import RegistrationError, register
from async_kernel.wire._sockets import BindError, SocketHub

if TYPE_CHECKING:
    from async_kernel.ipython._compat import ZMQInteractiveShell
    from async_kernel.wire._job import Job

__all__ = ("Kernel", "get_kernel")

log = logging.getLogger("async_kernel")


class Kernel(KernelSettings, IpykernelAPI):
    """A Jupyter kernel for Python that handles requests concurrently."""

    def __init__(self, **kwargs: Any) -> None:
        """Read the connection file (if one is set) and build the session.

        Raises:
            ConnectionFileError: The connection (or registration) file cannot be used.
        """
        super().__init__(**kwargs)
        Kernel._instance = self  # `get_kernel()` finds the running kernel
        self.registration: RegistrationInfo | None = None
        """The registration file's contents, when the kernel reports its ports (JEP 66)."""
        self._owns_connection_file = False
        self.connection = self._read_startup_files()
        # Ports given as 0 are chosen when binding and written back to the file.
        self._ports_to_choose = self.connection is not None and any(
            port <= 0 for port in self.connection.ports.values()
        )
        key = self.connection.key if self.connection else b""
        scheme = self.connection.signature_scheme if self.connection else "hmac-sha256"
        self.session = KernelSession(key, signature_scheme=scheme)
        """Signs and verifies messages; `send` and `msg` as jupyter_client's (ipykernel's API)."""
        self.interrupter = Interrupter()
        """Interrupts running cells (SIGINT, `interrupt_request`, timeouts)."""
        self.aborts = Aborts()
        """Answers `aborted` to the executes queued behind an error, or behind a shutdown."""
        self.subshells = SubshellManager(self.backend)
        """The subshells (JEP 91): `create()`, `ids()`, `caller(id)`, `delete(id)`."""
        self.patches = ProcessPatches()
        """What the kernel changed in the interpreter, undone when it stops."""
        self.comm_manager = KernelCommManager(self.comm_policy)
        """The comm manager (`comm.get_comm_manager()` while the kernel runs)."""
        self.memory_trim: MemoryTrim | None = None
        """Returns freed memory to the system after bursts (None when `trim_memory` is off)."""
        self._stop_event: anyio.Event | None = None
        self._stopping = False
        self._grace: threading.Timer | None = None
        self._watch: ParentWatch | None = None
        self._exit_code = 0
        self._startup_error: BindError | RegistrationError | None = None
        self.main_caller: Caller
        self.control_caller: Caller
        self.shell_caller: Caller
        self.hub: SocketHub
        self.outbox: Outbox
        self.stdio: StdIO
        self.shell: ZMQInteractiveShell
        self.iopub_socket: KernelSocket
        """ipykernel's `kernel.iopub_socket`: give it to `session.send`, from any thread."""
        self.handlers: RequestHandlers
        self.debugger: Debugger
        """Answers `debug_request`s with debugpy (when it is installed)."""
        self.dispatcher: Dispatcher

    def _read_startup_files(self) -> ConnectionInfo | None:
        """Read the connection file, or the registration file (given as either)."""
        if self.registration_file:
            self.registration = read_registration_file(self.registration_file)
        elif self.connection_file:
            startup = read_startup_file(self.connection_file)
            if isinstance(startup, ConnectionInfo):
                return startup
            self.registration, self.registration_file = startup, self.connection_file
            self.connection_file = ""
        if self.registration is None:
            return None
        if not self.connection_file:  # the kernel names its own connection file
            directory = runtime_dir()
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", self.registration.kernel_id)
            name = f"kernel-{safe}.json"
            self.connection_file = str(directory / name)
            self._owns_connection_file = True
        return self.registration.connection()

    @observe("thread_parent_policy")
    def _policy_changed(self, change: dict[str, Any]) -> None:
        routing.set_thread_parent_policy(change["new"])

    @observe("comm_policy")
    def _comm_policy_changed(self, change: dict[str, Any]) -> None:
        if hasattr(self, "comm_manager"):
            self.comm_manager.policy = change["new"]

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
        """Run the kernel until it is shut down; return the process exit code.

        Raises:
            BindError: A socket cannot be bound where the connection file says.
            RegistrationError: The registrar did not acknowledge the kernel's ports.
        """
        if self.connection is None:
            msg = "no connection file: start the kernel with -f CONNECTION_FILE"
            raise RuntimeError(msg)
        try:
            anyio.run(
                self._main, backend=self.backend, backend_options=main_loop_options(self.backend)
            )
        finally:
            # Stopped in time: an embedding process goes on.
            if self._grace is not None:
                self._grace.cancel()
            if self._watch is not None:
                self._watch.stop()
            self.patches.restore()
        if self._startup_error is not None:
            raise self._startup_error
        return self._exit_code

    async def _main(self) -> None:
        assert self.connection is not None
        self._stop_event = anyio.Event()
        async with Caller.attach(name="MainThread", protected=True) as main:
            self.main_caller = main
            self.control_caller = Caller.start_new(
                name="Control", backend=self.backend, protected=True
            )
            self.shell_caller = Caller.start_new(name="Shell", backend=self.backend, protected=True)
            for caller in (self.control_caller, self.shell_caller):
                hide_from_debugger(caller.thread)  # they run the kernel's code, never a cell's
            self._wire(self.connection)
            self._start_shell()
            if self.connection.key_generated:
                log.warning(
                    "the connection file %s has no key: messages are signed with a random key, "
                    'so no client can talk to this kernel. Give the file a key (or "key": '
                    '"" to disable signing).',
                    self.connection_file,
                )
            try:
                self.hub.start()
                if self.registration is not None:
                    await anyio.to_thread.run_sync(self._register, self.registration)
            except (BindError, RegistrationError) as e:
                self._startup_error = e  # raised by `run`, once everything is torn down
            else:
                if self._ports_to_choose:
                    write_connection_file(self.connection_file, self.connection)
                self._watch = ParentWatch(self.stop).start()
                await self._stop_event.wait()
                # `stop` interrupted the cells that run and aborted those that wait: every
                # request is answered before the callers stop (`shutdown_grace` bounds it).
                await self.dispatcher.wait_all_finished()
        self._teardown()

    def _register(self, registration: RegistrationInfo) -> None:
        """Report the bound ports to the registrar (JEP 66); return when it acknowledged."""
        ack = register(registration, self.hub.ports, timeout=self.registration_timeout)
        log.info("the registrar acknowledged the kernel %s: %r", registration.kernel_id, ack)

    def _wire(self, connection: ConnectionInfo) -> None:
        """Build the message path and install the process-wide patches."""
        from async_kernel.ipython import _cellnames as cellnames
        from async_kernel.ipython._compat import ZMQInteractiveShell
        from async_kernel.ipython._magics import KernelMagics
        from async_kernel.ipython._startup import profile_dir

        self.hub = SocketHub(connection, self.session)
        self.outbox = Outbox(
            self.session,
            self.hub.send,
            routing.current_parent,
            send_held=self.hub.send_held,
            send_soon=self.hub.send_soon,
        )
        self.iopub_socket = KernelSocket(Channel.iopub, self.outbox)
        self.stdio = StdIO(
            self.outbox.stream,
            flush_interval=self.flush_interval,
            capture_fds=self.capture_fd_output,
            fd_parent=self.interrupter.sole_job,
        )
        self.stdio.start(self.log_level)
        self.shell = ZMQInteractiveShell.instance(
            parent=self, kernel=self, outbox=self.outbox, profile_dir=profile_dir(self.profile)
        )
        self.shell.user_ns.setdefault("RunMode", RunMode)
        self.shell.register_magics(KernelMagics(self.shell, subshell_ids=self.subshells.ids))
        stdin = StdinBroker(self.outbox, self.stdio.flush)
        self.debugger = Debugger(
            outbox=self.outbox,
            cells=CellFiles(
                hash_method=cellnames.HASH_METHOD,
                hash_seed=cellnames.HASH_SEED,
                prefix=cellnames.file_prefix,
                suffix=cellnames.FILE_SUFFIX,
                name_of=cellnames.cell_file_name,
            ),
            shell=self.shell,
            run_sync=anyio.to_thread.run_sync,
        )
        self.interrupter.release_debugged = self.debugger.release
        self.handlers = RequestHandlers(
            shell=self.shell,
            outbox=self.outbox,
            interrupter=self.interrupter,
            aborts=self.aborts,
            subshells=self.subshells,
            comms=self.comm_manager,
            timers=self.control_caller,
            flush=self.stdio.flush,
            stop=self.stop,
            backend=self.backend,
            debugger=self.debugger,
        )
        callers = Callers(self.main_caller, self.control_caller, self.shell_caller, self.subshells)
        runner = JobRunner(self.outbox, self.handlers)
        comms = CommRouter(
            self.comm_manager,
            runner.run_now,
            self.main_caller,
            self.subshells,
            when_stopped=lambda inbox: post_to_stopped(
                inbox.caller.ident, functools.partial(self.interrupter.run_while_stopped, inbox)
            ),
        )
        self.debugger.on_stopped = comms.debugger_stopped
        self.interrupter.safe_points = comms.work_here

        def subshell_deleted(subshell_id: str) -> None:
            self.aborts.forget(subshell_id)
            comms.forget(subshell_id)

        self.subshells.on_delete = subshell_deleted
        self.dispatcher = Dispatcher(
            runner,
            callers,
            self.aborts,
            concurrency_mode=lambda: self.concurrency_mode,
            on_input_reply=stdin.on_reply,
            refusals=self.hub.drops,  # one log of bad input, flushed when the sockets close
            on_finished=self._memory_trim().finished if self.trim_memory else None,
            comms=comms,
        )
        self.hub.on_message = self.dispatcher.receive
        routing.set_thread_parent_policy(self.thread_parent_policy)
        self.patches.install(
            interrupter=self.interrupter,
            stdin=stdin,
            stdio=self.stdio,
            shell=self.shell,
            comms=self.comm_manager,
            outbox=self.outbox,
            switch_interval=self.switch_interval,
            on_terminate=self.stop,
        )

    def _memory_trim(self) -> MemoryTrim:
        """Trims the allocator from the control thread's loop once the kernel is quiet."""
        control = self.control_caller
        self.memory_trim = MemoryTrim(lambda delay, fn: control.call_later(delay, fn))
        return self.memory_trim

    def _start_shell(self) -> None:
        """Run IPython's start-up steps: extensions, startup files, `exec_lines`, `matplotlib`."""
        from async_kernel.ipython._startup import KernelStartup

        KernelStartup(self.shell, self.config).run()

    def _teardown(self) -> None:
        """Send the output, stop subshells and workers, send what they left, close the sockets.

        Each step runs even if an earlier one failed; failures are logged.
        """
        for step in (
            detach_all,  # a GUI's input hook: the main loop waits plainly while it shuts down
            self.debugger.close,  # `breakpoint()` is pdb's again
            self.stdio.flush,  # drains the fd capture, then flushes the streams
            self.subshells.stop_all,
            Worker.stop_all,
            self.stdio.stop,  # flushes again and gives the fds back
            self.hub.stop,  # sends what is queued, then closes the sockets
            self._remove_own_connection_file,
            self.shell.history_manager.end_session,
            # Undone inside the loop: asyncio's runner then finds its own SIGINT handler back.
            self.patches.restore,
        ):
            try:
                step()
            except Exception:
                log.exception("shutdown step %r failed", step)

    def _remove_own_connection_file(self) -> None:
        if self._owns_connection_file:
            pathlib.Path(self.connection_file).unlink(missing_ok=True)

    def stop(self, exit_code: int = 0) -> None:
        """Stop the kernel (from any thread): interrupt what runs, flush, exit.

        If running code ignores the interrupt, the process exits `shutdown_grace` seconds
        later anyway, after sending the output and messages already produced.
        """
        if self._stop_event is None or self._stopping:
            return
        self._stopping = True
        self._exit_code = exit_code
        self.aborts.abort_all()  # cells waiting for their turn never start
        if self.interrupter.running():
            self.interrupter.request()
        self.main_caller.call_direct(self._stop_event.set)
        self._grace = threading.Timer(self.shutdown_grace, self._exit_now)
        self._grace.daemon = True
        self._grace.start()

    def _exit_now(self) -> None:
        """End the process: the clean shutdown did not finish within `shutdown_grace`."""
        log.warning("running code ignored the shutdown for %s s: exiting", self.shutdown_grace)
        for step in (self.stdio.flush, lambda: self.hub.stop(timeout=1)):
            try:
                step()
            except Exception:
                log.exception("shutdown step %r failed", step)
        os._exit(self._exit_code)


def get_kernel() -> Kernel:
    """Return the running kernel.

    Raises:
        RuntimeError: No kernel runs in this process.
    """
    if not Kernel.initialized():
        msg = "no async-kernel runs in this process"
        raise RuntimeError(msg)
    return Kernel.instance()
