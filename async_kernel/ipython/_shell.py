"""The IPython shell of the kernel: results, displays, errors and payloads go out as messages.

Everything that IPython keeps as shell-wide state but that belongs to one request (the
execution count of the running cell, its payloads, its error) is kept per request here, so
cells that run at the same time in tasks, threads and subshells do not trample each other.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Literal

from IPython.core.builtin_trap import BuiltinTrap
from IPython.core.display_trap import DisplayTrap
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.history import HistoryManager
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from IPython.core.payload import PayloadManager
from traitlets import Any as AnyTrait
from traitlets import Instance, Type

from async_kernel.ipython._cellnames import CellCompiler
from async_kernel.ipython._inline import KernelEventManager
from async_kernel.ipython._tracebacks import interrupt_from_cancellation, without_kernel_frames
from async_kernel.wire._job import ExecuteState, current_job, error_content

__all__ = (
    "AsyncInteractiveShell",
    "KernelDisplayHook",
    "KernelDisplayPublisher",
    "KernelHistoryManager",
    "ProcessBuiltinTrap",
    "ProcessDisplayTrap",
    "RequestPayloadManager",
)


def _execute_state() -> ExecuteState | None:
    """The state of the execute request that runs in the current context, if one does."""
    job = current_job.get()
    return job.execute if job is not None else None


def _flush_streams() -> None:
    """Flush stdout and stderr so that a display follows the prints before it."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):  # a user-replaced or closed stream
            pass


class KernelDisplayHook(DisplayHook):
    """Sends a cell's result as `execute_result`, without state shared between cells."""

    outbox: Any = AnyTrait()
    """The kernel's `Outbox`, which publishes the message."""

    @property
    def exec_result(self) -> ExecutionResult | None:  # pyright: ignore[reportIncompatibleVariableOverride]
        """The `ExecutionResult` of the cell that runs in the current context."""
        state = _execute_state()
        result = state.result if state is not None else None
        return result if isinstance(result, ExecutionResult) else None

    @exec_result.setter
    def exec_result(self, value: ExecutionResult | None) -> None:
        state = _execute_state()
        if state is not None:
            state.result = value

    @property
    def prompt_count(self) -> int:  # pyright: ignore[reportIncompatibleVariableOverride]
        """The execution count of the cell that runs in the current context."""
        state = _execute_state()
        if state is not None:
            return state.count
        return self.shell.execution_count - 1  # pyright: ignore[reportOptionalMemberAccess]

    def __call__(self, result: Any = None) -> None:
        """Publish `result` (the value of a cell's last expression) as `execute_result`."""
        self.check_for_underscore()
        if result is None or self.quiet():
            return
        format_dict, md_dict = self.compute_format_data(result)
        self.update_user_ns(result)
        self.fill_exec_result(result)
        if format_dict:
            _flush_streams()
            content = {
                "execution_count": self.prompt_count,
                "data": format_dict,
                "metadata": md_dict,
            }
            self.outbox.publish("execute_result", content)
            executed = self.exec_result
            info = executed.info if executed is not None else None
            if info is None or info.store_history:
                # A cell outside the history has no entry to log its output under: IPython
                # would append it to the last stored cell's outputs, once per such execute.
                self.log_output(format_dict)


class KernelDisplayPublisher(DisplayPublisher):
    """Sends `display_data`, `update_display_data` and `clear_output` to the right cell."""

    outbox: Any = AnyTrait()
    """The kernel's `Outbox`, which publishes the message."""

    def publish(  # pyright: ignore[reportIncompatibleMethodOverride]
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        source: Any = None,
        *,
        transient: dict[str, Any] | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        """Publish a display; `update=True` replaces the display named in `transient`."""
        _flush_streams()
        content = {"data": data, "metadata": metadata or {}, "transient": transient or {}}
        self.outbox.publish("update_display_data" if update else "display_data", content)

    def clear_output(self, wait: bool = False) -> None:
        """Clear the cell's output, at once or (`wait=True`) when new output arrives."""
        _flush_streams()
        self.outbox.publish("clear_output", {"wait": wait})


class RequestPayloadManager(PayloadManager):
    """Keeps payloads (pager, set_next_input, ask_exit) with the request that made them."""

    def _payloads(self) -> list[dict[str, Any]]:
        state = _execute_state()
        return self._fallback if state is None else state.payload

    @property
    def _fallback(self) -> list[dict[str, Any]]:
        fallback: list[dict[str, Any]] = self.__dict__.setdefault("_fallback_list", [])  # pyright: ignore[reportAttributeAccessIssue]
        return fallback

    def write_payload(self, data: dict[str, Any], single: bool = True) -> None:
        """Add a payload to the current request's reply (replacing one of the same source)."""
        payloads = self._payloads()
        if single:
            payloads[:] = [p for p in payloads if p.get("source") != data.get("source")]
        payloads.append(data)

    def read_payload(self) -> list[dict[str, Any]]:
        """Return the current request's payloads."""
        return list(self._payloads())

    def clear_payload(self) -> None:
        """Forget the current request's payloads."""
        self._payloads().clear()


class KernelHistoryManager(HistoryManager):
    """IPython's history, kept for the main shell only.

    History lines are numbered by execution count, and each subshell counts on its own, so a
    subshell's cells would collide with the main shell's lines; they are not stored.
    """

    def store_inputs(self, line_num: int, source: str, source_raw: str | None = None) -> None:
        """Store a main-shell cell's input."""
        job = current_job.get()
        if job is None or job.subshell_id is None:
            super().store_inputs(line_num, source, source_raw)

    def store_output(self, line_num: int) -> None:
        """Store a main-shell cell's output."""
        job = current_job.get()
        if job is None or job.subshell_id is None:
            super().store_output(line_num)


class ProcessBuiltinTrap(BuiltinTrap):
    """IPython's builtins (`get_ipython`, `exit`), installed once for the process.

    IPython adds and removes them around every cell, counting nested uses; with cells running
    in several threads at once that count races (two threads delete `exit` and one fails with
    `KeyError`, or one cell removes `get_ipython` while another still runs). The kernel
    `activate`s them when it starts and `deactivate`s them when it stops; entering the trap
    around a cell does nothing.
    """

    def __enter__(self) -> BuiltinTrap:
        return self

    def __exit__(self, *exc_info: object) -> Literal[False]:
        return False


class ProcessDisplayTrap(DisplayTrap):
    """`sys.displayhook`, set once for the process (see `ProcessBuiltinTrap` for why)."""

    def __enter__(self) -> DisplayTrap:
        return self

    def __exit__(self, *exc_info: object) -> Literal[False]:
        return False


class AsyncInteractiveShell(InteractiveShell):
    """IPython for async-kernel: top-level await on the running loop, output as messages."""

    kernel: Any = AnyTrait()
    """The kernel this shell runs for (as in ipykernel: `get_ipython().kernel`)."""
    outbox: Any = AnyTrait()
    """The kernel's `Outbox`: results, displays and errors are published through it."""
    displayhook_class = Type(KernelDisplayHook)
    display_pub_class = Type(KernelDisplayPublisher)
    payload_manager = Instance(PayloadManager, allow_none=True)
    compiler_class = Type(CellCompiler)
    """Compiles cells under ipykernel's file names (a hash of the source, see `_cellnames`)."""

    _count_lock = threading.Lock()

    def __init__(self, **kwargs: Any) -> None:
        self._counts: dict[str | None, int] = {None: 1}
        super().__init__(**kwargs)
        self.payloads = RequestPayloadManager(parent=self)
        self.payload_manager = self.payloads
        self.autoawait = True
        self.builtin_trap = ProcessBuiltinTrap(shell=self)
        self.display_trap = ProcessDisplayTrap(hook=self.displayhook)
        self.displayhook.outbox = self.outbox  # pyright: ignore[reportAttributeAccessIssue]
        self.display_pub.outbox = self.outbox  # pyright: ignore[reportAttributeAccessIssue]

    def init_history(self) -> None:
        """Use the kernel's history manager, batching writes unless configured otherwise.

        IPython's default commits every cell to sqlite while holding the lock that the next
        cell needs, which caps a kernel at a few hundred cells a second. Batches of 20 keep
        `history_request` exact (it writes the cache out before reading).
        """
        self.history_manager = KernelHistoryManager(shell=self, parent=self)
        self.configurables.append(self.history_manager)  # pyright: ignore[reportArgumentType]
        if "db_cache_size" not in self.config.get("HistoryManager", {}):
            self.history_manager.db_cache_size = 20

    def init_events(self) -> None:
        """Use the kernel's event manager, which keeps inline figures with their cell."""
        super().init_events()
        events = KernelEventManager(self, ())
        events.callbacks = self.events.callbacks  # with what IPython registered
        self.events = events

    def init_hooks(self) -> None:
        """Send pager output (`obj?`) to the client as a payload."""
        super().init_hooks()
        from IPython.core import page, payloadpage

        self.set_hook("show_in_pager", page.as_hook(payloadpage.page), 99)

    # --- execution counts, per subshell and per request ------------------------------------

    @property
    def execution_count(self) -> int:  # pyright: ignore[reportIncompatibleVariableOverride]
        """The count of the cell that runs here, or the next count of this (sub)shell."""
        job = current_job.get()
        if job is not None and job.execute is not None:
            return job.execute.count
        return self._counts.get(job.subshell_id if job else None, 1)

    @execution_count.setter
    def execution_count(self, value: int) -> None:
        job = current_job.get()
        if job is not None and job.execute is not None:
            return  # IPython's end-of-cell increment: the count was taken when the cell began
        with self._count_lock:
            self._counts[job.subshell_id if job else None] = value

    def next_execution_count(self, subshell_id: str | None, *, advance: bool) -> int:
        """Return the count for a new cell of `subshell_id`, advancing the counter if asked."""
        with self._count_lock:
            count = self._counts.get(subshell_id, 1)
            if advance:
                self._counts[subshell_id] = count + 1
            return count

    # --- errors and payloads ---------------------------------------------------------------

    def showtraceback(
        self,
        exc_tuple: tuple[type[BaseException], BaseException, Any] | None = None,
        filename: str | None = None,
        tb_offset: int | None = None,
        exception_only: bool = False,
        running_compiled_code: bool = False,
    ) -> None:
        """Show the error that just occurred; an interrupt with the user's frames only.

        A cancellation caused by an interrupt shows as `KeyboardInterrupt`, and neither shows
        the frames of the kernel or the event loop where the interrupt landed (see
        `_tracebacks`). Any error of a cell whose timeout expired shows as the timeout.
        """
        etype, evalue, tb = exc_tuple if exc_tuple is not None else sys.exc_info()
        if etype is not None and evalue is not None:
            state = _execute_state()
            if state is not None and state.shows_as_interrupt(type(evalue).__name__):
                if state.timeout is not None:
                    self._showtraceback(etype, evalue, [])  # replaced by the timeout's error
                    return
                evalue, tb = interrupt_from_cancellation(tb)
                etype = KeyboardInterrupt
            elif isinstance(evalue, KeyboardInterrupt):
                tb = without_kernel_frames(tb)
            exc_tuple = (etype, evalue, tb)
        super().showtraceback(exc_tuple, filename, tb_offset, exception_only, running_compiled_code)

    def _format_exception_for_storage(
        self,
        exception: BaseException,
        filename: str | None = None,
        running_compiled_code: bool = False,
    ) -> dict[str, Any]:
        """Format an error for the history; an interrupt as it was shown."""
        state = _execute_state()
        if state is not None and state.error is not None and state.interrupted:
            return dict(state.error)
        return super()._format_exception_for_storage(exception, filename, running_compiled_code)

    def _showtraceback(
        self, etype: type[BaseException], evalue: BaseException, stb: list[str]
    ) -> None:
        _flush_streams()
        content = error_content(getattr(etype, "__name__", str(etype)), str(evalue), stb)
        state = _execute_state()
        if state is not None:
            content = state.shown_error(content)
            if state.suppress_error:
                return
        self.outbox.publish("error", content)

    def set_next_input(self, s: str, replace: bool = False) -> None:
        """Ask the client to put `s` in the next input cell."""
        self.payloads.write_payload({"source": "set_next_input", "text": s, "replace": replace})

    def ask_exit(self) -> None:
        """`exit` in a cell: ask the client to close (the kernel keeps running if it says so)."""
        self.exit_now = True
        self.payloads.write_payload({"source": "ask_exit", "keepkernel": False})

    def enable_gui(self, gui: str | None = None) -> None:
        """Run GUI toolkit `gui`'s events while the main shell waits (`%gui`); None: off."""
        from async_kernel.ipython._gui import main_gui

        self.active_eventloop = main_gui.enable(gui, self)
