"""What each request does: one method per wire `msg_type`, returning the reply content."""

from __future__ import annotations

import inspect
import logging
import platform
import sys
import threading
from typing import TYPE_CHECKING, Any

import anyio
import IPython
from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult, InteractiveShell

from async_kernel._enums import Channel
from async_kernel._version import __version__
from async_kernel.callers._caller import Caller
from async_kernel.output._routing import set_latest_execute
from async_kernel.requests import _introspection as introspection
from async_kernel.requests._dap import as_reply, error_response
from async_kernel.requests._debugger import debugpy_available
from async_kernel.requests._interrupts import Running
from async_kernel.requests._usercontext import UserContexts
from async_kernel.wire._job import ExecuteState
from async_kernel.wire._session import PROTOCOL_VERSION, utcnow_iso

if TYPE_CHECKING:
    from collections.abc import Callable

    from async_kernel.callers._pending import Pending
    from async_kernel.ipython._shell import AsyncInteractiveShell
    from async_kernel.output._comm import KernelCommManager
    from async_kernel.requests._debugger import Debugger
    from async_kernel.requests._dispatcher import Aborts
    from async_kernel.requests._interrupts import Interrupter
    from async_kernel.requests._subshells import SubshellManager
    from async_kernel.wire._job import Job
    from async_kernel.wire._outbox import Outbox

__all__ = ("RequestHandlers",)

log = logging.getLogger("async_kernel")


_TAKES_CELL_META = "cell_meta" in inspect.signature(InteractiveShell.run_cell_async).parameters
"""IPython 9 passes the request's metadata on to `pre_run_cell` callbacks (`info.cell_meta`)."""


def _ok(**content: Any) -> dict[str, Any]:
    return {"status": "ok", **content}


class RequestHandlers:
    """What the kernel does for each request: methods named exactly like the message types.

    Args:
        shell: Runs cells, completes, inspects and keeps the history.
        outbox: Publishes `execute_input`, errors and notices.
        interrupter: Keeps the running cells, so that they can be interrupted.
        aborts: Aborts the executes queued behind a failed one.
        subshells: Creates, lists and deletes subshells.
        comms: The comm manager that comm messages are handed to.
        timers: The caller whose loop runs cell timeouts (the control caller).
        flush: Sends buffered output (before an execute reply).
        stop: Stops the kernel (after a shutdown reply).
        backend: The async backend, named in the banner.
        debugger: Answers debug requests (None: the kernel has no debugger).
    """

    def __init__(
        self,
        *,
        shell: AsyncInteractiveShell,
        outbox: Outbox,
        interrupter: Interrupter,
        aborts: Aborts,
        subshells: SubshellManager,
        comms: KernelCommManager,
        timers: Caller,
        flush: Callable[[], None],
        stop: Callable[[], None],
        backend: str,
        debugger: Debugger | None = None,
    ) -> None:
        self.shell = shell
        self.outbox = outbox
        self.interrupter = interrupter
        self.aborts = aborts
        self.subshells = subshells
        self.comms = comms
        self.timers = timers
        self.flush = flush
        self.stop = stop
        self.backend = backend
        self.debugger = debugger
        self._info: dict[str, Any] | None = None
        self.user_contexts = UserContexts()
        """The context variables cells set, carried to the next cell of their (sub)shell."""

    # --- information -----------------------------------------------------------------------

    def kernel_info_request(self, job: Job) -> dict[str, Any]:
        """Describe the kernel, its language and its features."""
        return self.kernel_info()

    def kernel_info(self) -> dict[str, Any]:
        """Return the content of the kernel's `kernel_info_reply` (computed once)."""
        if self._info is None:
            self._info = self._describe()
        return self._info

    def _describe(self) -> dict[str, Any]:
        return _ok(
            protocol_version=PROTOCOL_VERSION,
            implementation="async_kernel",
            implementation_version=__version__,
            language_info={
                "name": "python",
                "version": platform.python_version(),
                "mimetype": "text/x-python",
                "codemirror_mode": {"name": "ipython", "version": 3},
                "pygments_lexer": "ipython3",
                "nbconvert_exporter": "python",
                "file_extension": ".py",
            },
            banner=f"Python {sys.version.split()[0]}, IPython {IPython.__version__}, "
            f"async-kernel {__version__} ({self.backend})\n",
            help_links=[
                {"text": "Python Reference", "url": "https://docs.python.org/3/"},
                {"text": "IPython Reference", "url": "https://ipython.readthedocs.io/en/stable/"},
            ],
            supported_features=["kernel subshells"],
            debugger=self.debugger is not None and debugpy_available(),
        )

    def comm_info_request(self, job: Job) -> dict[str, Any]:
        """List the open comms, optionally of one target."""
        return _ok(comms=self.comms.comm_info(job.content.get("target_name")))

    # --- execution -------------------------------------------------------------------------

    async def execute_request(self, job: Job) -> dict[str, Any]:
        """Run a cell and reply with its status, count, user expressions and payloads."""
        c = job.content
        silent = bool(c.get("silent", False))
        store_history = bool(c.get("store_history", not silent)) and not silent
        aborted = self.aborts.is_aborted(job)
        code = str(c.get("code", ""))
        empty = not code or code.isspace()
        # An aborted or empty cell takes no execution count (as in IPython and ipykernel).
        count = self.shell.next_execution_count(
            job.subshell_id, advance=store_history and not aborted and not empty
        )
        metadata: dict[str, Any] = {
            "started": utcnow_iso(),
            "dependencies_met": True,
            "engine": self.outbox.session_id,
        }
        state = job.execute = ExecuteState(
            count, metadata, suppress_error="suppress-error" in job.tags
        )
        if aborted:
            metadata["status"] = "aborted"
            return {"status": "aborted", "execution_count": count}
        if not silent:
            # Soon, not now: a quick cell's reply and idle take it along (one wake-up of the
            # socket thread); a slow cell's goes out a moment (`SOON`) after the request came.
            self.outbox.publish(
                "execute_input", {"code": code, "execution_count": count}, parent=job, soon=True
            )
        if job.channel is Channel.shell and job.subshell_id is None:
            set_latest_execute(job)
        error = await self._run_cell(job, state, code, store_history=store_history, silent=silent)
        if error is None:
            expressions = c.get("user_expressions") or {}
            reply = _ok(
                execution_count=count,
                user_expressions=self.shell.user_expressions(expressions) if expressions else {},
                payload=state.payload,
            )
        elif state.suppress_error:
            self.outbox.publish(
                "stream", {"name": "stderr", "text": f"{error['ename']} (suppressed)\n"}
            )
            reply = _ok(execution_count=count, user_expressions={}, payload=[])
        else:
            reply = {"status": "error", "execution_count": count, **error}
            if c.get("stop_on_error", True) and "raises-exception" not in job.tags:
                self.aborts.abort_queued(job)
        metadata["status"] = reply["status"]
        return reply

    async def _run_cell(
        self, job: Job, state: ExecuteState, code: str, *, store_history: bool, silent: bool
    ) -> dict[str, Any] | None:
        """Run `code` interruptibly; return the error content, or None if it succeeded.

        IPython's events fire as in ipykernel: `pre_execute` and `pre_run_cell` from
        `run_cell_async`, then `post_execute` and `post_run_cell` with this cell's own result,
        whatever happened (only the `*_execute` pair for a silent execute).
        """
        before = self.user_contexts.enter(job)
        with anyio.CancelScope() as scope:
            running = Running(job, threading.get_ident(), Caller(), scope, threading.Event())
            self.interrupter.add(running)
            timer = self._arm_timeout(job, state)
            cell_id = job.msg.metadata.get("cellId")
            result: ExecutionResult | None = None
            try:
                transformed, preprocessing_error = code, None
                try:
                    transformed = self.shell.transform_cell(code)
                except Exception:
                    preprocessing_error = sys.exc_info()
                extra: dict[str, Any] = {"cell_meta": job.msg.metadata} if _TAKES_CELL_META else {}
                result = state.result = await self.shell.run_cell_async(
                    code,
                    store_history=store_history,
                    silent=silent,
                    transformed_cell=transformed,
                    preprocessing_exc_tuple=preprocessing_error,
                    cell_id=cell_id,
                    **extra,
                )
            except BaseException as e:
                # Stopped outside IPython's own error handling: callbacks still get a result.
                result = ExecutionResult(ExecutionInfo(code, store_history, silent, True, cell_id))
                result.error_in_exec = e
                raise
            finally:
                try:
                    try:
                        self._post_events(state, result, silent=silent)
                    finally:
                        # While the cell still counts as running: its fd-level output is then
                        # known to be its own (see `Interrupter.sole_job`).
                        self.flush()
                finally:
                    self.interrupter.remove(job)
                    if timer is not None:
                        timer.cancel()
                    self.user_contexts.leave(job, before)
        error, publish = state.outcome(cancelled=scope.cancelled_caught)
        if publish and error is not None:
            self.outbox.publish("error", error)
        return error

    def _post_events(
        self, state: ExecuteState, result: ExecutionResult | None, *, silent: bool
    ) -> None:
        """Fire `post_execute` and (unless silent) `post_run_cell`, as IPython's `run_cell` does.

        An error in a callback is shown in the cell (IPython prints which callback failed and
        shows the traceback); the reply still reports the cell's own outcome.
        """
        error = state.error
        events = self.shell.events
        try:
            events.trigger("post_execute")
            if not silent:
                events.trigger("post_run_cell", result)
        finally:
            state.error = error

    def _arm_timeout(self, job: Job, state: ExecuteState) -> Pending[None] | None:
        """Interrupt `job` if it runs longer than its metadata `timeout` (or tag `timeout=N`)."""
        timeout = job.msg.metadata.get("timeout")
        for tag in job.tags:
            if tag.startswith("timeout="):
                timeout = tag.removeprefix("timeout=")
        try:
            seconds = float(timeout) if timeout is not None else 0.0
        except (TypeError, ValueError):
            log.warning("ignored a timeout that is not a number: %r", timeout)
            return None
        if not seconds > 0:
            return None

        def expire() -> None:
            state.timeout = seconds
            self.interrupter.request([job])

        return self.timers.call_later(seconds, expire)

    # --- introspection (the replies are built in `_introspection`) -------------------------

    def complete_request(self, job: Job) -> dict[str, Any]:
        """Complete the code at the cursor."""
        return introspection.complete(self.shell, job.content)

    def inspect_request(self, job: Job) -> dict[str, Any]:
        """Describe the object at the cursor (`obj?` / Shift+Tab)."""
        return introspection.inspect(self.shell, job.content)

    def is_complete_request(self, job: Job) -> dict[str, Any]:
        """Say whether the code is complete, incomplete (with the indent) or invalid."""
        return introspection.is_complete(self.shell, job.content)

    def history_request(self, job: Job) -> dict[str, Any]:
        """Return past input (and output): the tail, a range, or a search."""
        return introspection.history(self.shell, job.content)

    # --- comms -----------------------------------------------------------------------------

    def comm_open(self, job: Job) -> None:
        """The client opens a comm: call its target."""
        self.comms.comm_open(None, None, job.msg.to_dict())  # pyright: ignore[reportArgumentType]

    def comm_msg(self, job: Job) -> None:
        """A message for an open comm."""
        self.comms.comm_msg(None, None, job.msg.to_dict())  # pyright: ignore[reportArgumentType]

    def comm_close(self, job: Job) -> None:
        """The client closes a comm."""
        self.comms.comm_close(None, None, job.msg.to_dict())  # pyright: ignore[reportArgumentType]

    # --- control ---------------------------------------------------------------------------

    def interrupt_request(self, job: Job) -> dict[str, Any]:
        """Interrupt every running cell."""
        self.interrupter.request()
        return _ok()

    def shutdown_request(self, job: Job) -> dict[str, Any]:
        """Reply, then stop the kernel (the client restarts it when `restart` is true)."""
        restart = bool(job.content.get("restart", False))
        job.after_reply = self.stop
        return _ok(restart=restart)

    async def debug_request(self, job: Job) -> dict[str, Any]:
        """A DAP request for the debugger; the reply is its DAP response."""
        if self.debugger is None:
            return as_reply(error_response(job.content, "this kernel runs without a debugger"))
        return as_reply(await self.debugger.handle(job))

    def create_subshell_request(self, job: Job) -> dict[str, Any]:
        """Create a subshell and return its id."""
        return _ok(subshell_id=self.subshells.create())

    def delete_subshell_request(self, job: Job) -> dict[str, Any]:
        """Delete a subshell."""
        subshell_id = str(job.content.get("subshell_id", ""))
        self.subshells.delete(subshell_id)
        self.user_contexts.forget(subshell_id)
        return _ok()

    def list_subshell_request(self, job: Job) -> dict[str, Any]:
        """List the subshells."""
        return _ok(subshell_id=self.subshells.ids())
