"""What each request does: one method per wire `msg_type`, returning the reply content."""

from __future__ import annotations

import logging
import platform
import sys
import threading
from typing import TYPE_CHECKING, Any

import anyio
import IPython
from IPython.core.history import HistoryAccessor

from async_kernel import __version__, routing
from async_kernel.caller import Caller
from async_kernel.enums import Channel
from async_kernel.interrupts import Interrupter, Running
from async_kernel.session import PROTOCOL_VERSION, utcnow_iso

if TYPE_CHECKING:
    from async_kernel.job import Job
    from async_kernel.kernel import Kernel
    from async_kernel.pending import Pending

__all__ = ("RequestHandlers",)

log = logging.getLogger("async_kernel")


def _ok(**content: Any) -> dict[str, Any]:
    return {"status": "ok", **content}


class RequestHandlers:
    """What the kernel does for each request: methods named exactly like the message types.

    Args:
        kernel: The kernel whose shell, sockets and state the handlers use.
    """

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._info: dict[str, Any] | None = None

    # --- information -----------------------------------------------------------------------

    def kernel_info_request(self, job: Job) -> dict[str, Any]:
        """Describe the kernel, its language and its features."""
        if self._info is None:
            self._info = self._kernel_info()
        return self._info

    def _kernel_info(self) -> dict[str, Any]:
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
            f"async-kernel {__version__} ({self.kernel.backend})\n",
            help_links=[
                {"text": "Python Reference", "url": "https://docs.python.org/3/"},
                {"text": "IPython Reference", "url": "https://ipython.readthedocs.io/en/stable/"},
            ],
            supported_features=["kernel subshells"],
            debugger=False,
        )

    def comm_info_request(self, job: Job) -> dict[str, Any]:
        """List the open comms, optionally of one target."""
        return _ok(comms=self.kernel.comm_manager.comm_info(job.content.get("target_name")))

    # --- execution -------------------------------------------------------------------------

    async def execute_request(self, job: Job) -> dict[str, Any]:
        """Run a cell and reply with its status, count, user expressions and payloads."""
        c = job.content
        shell = self.kernel.shell
        silent = bool(c.get("silent", False))
        store_history = bool(c.get("store_history", not silent)) and not silent
        aborted = self.kernel.dispatcher.is_aborted(job)
        # An aborted cell never runs, so it takes no execution count (as in ipykernel).
        count = shell.next_execution_count(job.subshell_id, advance=store_history and not aborted)
        job.state["execution_count"] = count
        started = utcnow_iso()
        metadata: dict[str, Any] = {
            "started": started,
            "dependencies_met": True,
            "engine": self.kernel.session.session_id,
        }
        job.state["reply_metadata"] = metadata
        if aborted:
            metadata["status"] = "aborted"
            return {"status": "aborted", "execution_count": count}
        code = str(c.get("code", ""))
        job.state["suppress_error"] = self._suppressed(job)
        if not silent:
            self.kernel.publish(
                "execute_input", {"code": code, "execution_count": count}, parent=job
            )
        if job.channel is Channel.shell and job.subshell_id is None:
            routing.set_latest_execute(job)
        error = await self._run_cell(job, code, store_history=store_history, silent=silent)
        self.kernel.flush_output()
        if error is None:
            expressions = c.get("user_expressions") or {}
            reply = _ok(
                execution_count=count,
                user_expressions=shell.user_expressions(expressions) if expressions else {},
                payload=job.state.get("payload", []),
            )
        else:
            reply = {"status": "error", "execution_count": count, **error}
            if job.state["suppress_error"]:
                self.kernel.publish(
                    "stream", {"name": "stderr", "text": f"{error['ename']} (suppressed)\n"}
                )
                reply = _ok(execution_count=count, user_expressions={}, payload=[])
            elif c.get("stop_on_error", True) and not self._raises_allowed(job):
                self.kernel.dispatcher.abort_queued(job)
        metadata["status"] = reply["status"]
        return reply

    async def _run_cell(
        self, job: Job, code: str, *, store_history: bool, silent: bool
    ) -> dict[str, Any] | None:
        """Run `code` interruptibly; return the error content, or None if it succeeded."""
        caller = Caller()
        result = None
        with anyio.CancelScope() as scope:
            running = Running(job, threading.get_ident(), caller, scope, threading.Event())
            self.kernel.interrupter.add(running)
            timer = self._arm_timeout(job)
            try:
                transformed, preprocessing_error = code, None
                try:
                    transformed = self.kernel.shell.transform_cell(code)
                except Exception:
                    preprocessing_error = sys.exc_info()
                result = await self.kernel.shell.run_cell_async(
                    code,
                    store_history=store_history,
                    silent=silent,
                    transformed_cell=transformed,
                    preprocessing_exc_tuple=preprocessing_error,
                    cell_id=job.msg.metadata.get("cellId"),
                )
            finally:
                self.kernel.interrupter.remove(job)
                if timer is not None:
                    timer.cancel()
        if job.state.get("interrupted"):
            described = Interrupter.describe(job)
            if scope.cancelled_caught or "error" not in job.state:
                self.kernel.publish("error", described)
                return described
            return job.state["error"]
        if result is None:
            return Interrupter.describe(job)
        if result.success:
            return None
        error = job.state.get("error")
        if error is None:
            exc = result.error_in_exec or result.error_before_exec
            error = {"ename": type(exc).__name__, "evalue": str(exc), "traceback": []}
        return error

    def _arm_timeout(self, job: Job) -> Pending[None] | None:
        """Interrupt `job` if it runs longer than its metadata `timeout` (or tag `timeout=N`)."""
        meta = job.msg.metadata
        timeout = meta.get("timeout")
        for tag in meta.get("tags") or ():
            if isinstance(tag, str) and tag.startswith("timeout="):
                timeout = tag.removeprefix("timeout=")
        try:
            seconds = float(timeout) if timeout is not None else 0.0
        except (TypeError, ValueError):
            log.warning("ignored a timeout that is not a number: %r", timeout)
            return None
        if seconds <= 0:
            return None

        def expire() -> None:
            job.state["timeout_hit"] = timeout
            self.kernel.interrupter.request([job])

        return self.kernel.control_caller.call_later(seconds, expire)

    @staticmethod
    def _tags(job: Job) -> list[str]:
        tags = job.msg.metadata.get("tags") or []
        return [t for t in tags if isinstance(t, str)]

    def _suppressed(self, job: Job) -> bool:
        return "suppress-error" in self._tags(job)

    def _raises_allowed(self, job: Job) -> bool:
        return "raises-exception" in self._tags(job)

    # --- introspection ---------------------------------------------------------------------

    def complete_request(self, job: Job) -> dict[str, Any]:
        """Complete the code at the cursor."""
        from IPython.core.completer import provisionalcompleter, rectify_completions

        code = str(job.content.get("code", ""))
        cursor = job.content.get("cursor_pos")
        cursor = len(code) if cursor is None else int(cursor)
        with provisionalcompleter():
            raw = self.kernel.shell.Completer.completions(code, cursor)  # pyright: ignore[reportOptionalMemberAccess]
            completions = list(rectify_completions(code, raw))
        start = completions[0].start if completions else cursor
        end = completions[0].end if completions else cursor
        types = [
            {
                "start": c.start,
                "end": c.end,
                "text": c.text,
                "type": c.type,
                "signature": c.signature,
            }
            for c in completions
        ]
        return _ok(
            matches=[c.text for c in completions],
            cursor_start=start,
            cursor_end=end,
            metadata={"_jupyter_types_experimental": types},
        )

    def inspect_request(self, job: Job) -> dict[str, Any]:
        """Describe the object at the cursor (`obj?` / Shift+Tab)."""
        from IPython.utils.tokenutil import token_at_cursor

        code = str(job.content.get("code", ""))
        cursor = job.content.get("cursor_pos")
        name = token_at_cursor(code, len(code) if cursor is None else int(cursor))
        try:
            data = self.kernel.shell.object_inspect_mime(
                name, detail_level=int(job.content.get("detail_level", 0))
            )
        except KeyError:
            return _ok(found=False, data={}, metadata={})
        if not self.kernel.shell.enable_html_pager:
            data.pop("text/html", None)
        return _ok(found=True, data=data, metadata={})

    def is_complete_request(self, job: Job) -> dict[str, Any]:
        """Say whether the code is complete, incomplete (with the indent) or invalid."""
        code = str(job.content.get("code", ""))
        status, indent = self.kernel.shell.input_transformer_manager.check_complete(code)
        content: dict[str, Any] = {"status": status}
        if status == "incomplete":
            content["indent"] = " " * (indent or 0)
        return content

    def history_request(self, job: Job) -> dict[str, Any]:
        """Return past input (and output): the tail, a range, or a search."""
        c = job.content
        history = self.kernel.shell.history_manager
        assert history is not None
        raw, output = bool(c.get("raw", True)), bool(c.get("output", False))
        match c.get("hist_access_type", "tail"):
            case "tail":
                items = history.get_tail(
                    int(c.get("n") or 10), raw=raw, output=output, include_latest=True
                )
            case "range":
                session = int(c.get("session", 0))
                if session <= 0:  # 0 is the current session, -1 the one before, ...
                    session += history.session_number
                # From the database, where each line is stored under its execution count:
                # `history.get_range` reads the current session from a list indexed by arrival,
                # which drifts from the counts once subshells or concurrent cells store input.
                history.writeout_cache()
                items = HistoryAccessor.get_range(
                    history, session, int(c.get("start", 0)), c.get("stop"), raw=raw, output=output
                )
            case "search":
                items = history.search(
                    str(c.get("pattern", "*")),
                    raw=raw,
                    output=output,
                    n=c.get("n"),
                    unique=bool(c.get("unique")),
                )
            case other:
                msg = f"unknown hist_access_type {other!r}: use 'tail', 'range' or 'search'"
                raise ValueError(msg)
        return _ok(history=[list(item) for item in items])

    # --- comms -----------------------------------------------------------------------------

    def comm_open(self, job: Job) -> None:
        """The client opens a comm: call its target."""
        self.kernel.comm_manager.comm_open(None, None, job.msg.to_dict())  # pyright: ignore[reportArgumentType]

    def comm_msg(self, job: Job) -> None:
        """A message for an open comm."""
        self.kernel.comm_manager.comm_msg(None, None, job.msg.to_dict())  # pyright: ignore[reportArgumentType]

    def comm_close(self, job: Job) -> None:
        """The client closes a comm."""
        self.kernel.comm_manager.comm_close(None, None, job.msg.to_dict())  # pyright: ignore[reportArgumentType]

    # --- control ---------------------------------------------------------------------------

    def interrupt_request(self, job: Job) -> dict[str, Any]:
        """Interrupt every running cell."""
        self.kernel.interrupter.request()
        return _ok()

    def shutdown_request(self, job: Job) -> dict[str, Any]:
        """Reply, then stop the kernel (the client restarts it when `restart` is true)."""
        restart = bool(job.content.get("restart", False))
        job.state["after_reply"] = self.kernel.stop
        return _ok(restart=restart)

    def debug_request(self, job: Job) -> dict[str, Any]:
        """The debugger is not part of async-kernel: say so (kernel_info says `debugger: false`)."""
        return {
            "status": "error",
            "ename": "DebuggerUnavailable",
            "evalue": "async-kernel has no debugger (kernel_info_reply says debugger: false)",
            "traceback": [],
        }

    def create_subshell_request(self, job: Job) -> dict[str, Any]:
        """Create a subshell and return its id."""
        return _ok(subshell_id=self.kernel.subshells.create())

    def delete_subshell_request(self, job: Job) -> dict[str, Any]:
        """Delete a subshell."""
        self.kernel.subshells.delete(str(job.content.get("subshell_id", "")))
        return _ok()

    def list_subshell_request(self, job: Job) -> dict[str, Any]:
        """List the subshells."""
        return _ok(subshell_id=self.kernel.subshells.ids())
