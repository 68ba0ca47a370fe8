"""The Jupyter debug protocol: `debug_request` on control, answered with debugpy's help.

debugpy runs in the kernel process (started by the first `initialize`); its adapter runs in
a process of its own, and the kernel talks DAP to the adapter over a local socket (`_dap`).
Most requests are passed on; the kernel answers itself what only it knows: cell files
(`dumpCell`, `source`, `debugInfo`), the user namespace (`inspectVariables`,
`richInspectVariables`, `variables` while nothing is stopped, `copyToGlobals`) and `modules`.
Every request gets a DAP response: a failure says what went wrong (`success: false` and a
`message`), never an exception that leaves the client waiting.

The kernel keeps one idle connection to the adapter (the anchor) for as long as it lives. On
each new connection the adapter writes to the client of its oldest session; were that a
session just disconnected (its connection closed, not yet forgotten), the write would fail in
the adapter's accepting thread, which would end: no connection would be taken again (debugpy
1.8.22, `adapter/sessions.py` `report_sockets`). The anchor is always the oldest session.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from async_kernel._threads import hide_from_debugger
from async_kernel.requests import _debugfiles as files
from async_kernel.requests._dap import (
    DapClient,
    DebugRequestError,
    argument,
    dap_response,
    error_response,
)
from async_kernel.requests._debuginspect import InspectionRequests
from async_kernel.requests._variables import VariableExplorer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    import anyio

    from async_kernel.ipython._shell import AsyncInteractiveShell
    from async_kernel.requests._debugfiles import CellFiles
    from async_kernel.requests._debugstate import DebugState
    from async_kernel.wire._job import Job
    from async_kernel.wire._outbox import Outbox

__all__ = ("Debugger", "debugpy_available")

log = logging.getLogger("async_kernel")

_KERNEL_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_FORWARDED = frozenset(
    {
        "scopes",
        "next",
        "stepIn",
        "stepOut",
        "continue",
        "pause",
        "evaluate",
        "threads",
        "setExceptionBreakpoints",
        "setFunctionBreakpoints",
        "exceptionInfo",
        "setVariable",
        "setExpression",
        "completions",
        "loadedSources",
    }
)
"""DAP requests that debugpy answers as they are (once the debugger is attached)."""


_INITIALIZE_WAIT = 20.0
"""Seconds `initialize` waits for debugpy's adapter (it answers at once when it is well)."""

_RESUMING = frozenset({"continue", "next", "stepIn", "stepOut"})
"""Forwarded requests that resume a stopped thread (or all of them)."""


def debugpy_available() -> bool:
    """Whether debugpy can be imported (without importing it: that takes a while)."""
    return importlib.util.find_spec("debugpy") is not None


class Debugger(InspectionRequests):
    """Answers `debug_request`s and publishes debugpy's events as `debug_event`s.

    Args:
        outbox: Publishes the events on iopub.
        cells: How cells are named.
        shell: The user namespace, the display formatter and the input transformers.
        run_sync: Runs a blocking function off the control loop (starting debugpy takes a
            second or so) and returns an awaitable of its result.
    """

    def __init__(
        self,
        *,
        outbox: Outbox,
        cells: CellFiles,
        shell: AsyncInteractiveShell,
        run_sync: Callable[[Callable[[], Any]], Awaitable[Any]],
    ) -> None:
        self.outbox = outbox
        self.cells = cells
        self.shell = shell
        self._run_sync = run_sync
        self._state: DebugState | None = None
        self.explorer = VariableExplorer()
        self._endpoint: tuple[str, int] | None = None
        self._anchor: DapClient | None = None
        self._starting: anyio.Lock | None = None
        self._parent: Job | None = None
        self.on_stopped: Callable[[], None] = lambda: None
        """Called (from a thread of the debugger's) when a thread stops in the debugger."""
        self._local: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "initialize": self.initialize,
            "attach": self.attach,
            "configurationDone": self.configurationDone,
            "disconnect": self.disconnect,
            "debugInfo": self.debugInfo,
            "dumpCell": self.dumpCell,
            "source": self.source,
            "setBreakpoints": self.setBreakpoints,
            "stackTrace": self.stackTrace,
            "variables": self.variables,
            "inspectVariables": self.inspectVariables,
            "richInspectVariables": self.richInspectVariables,
            "copyToGlobals": self.copyToGlobals,
            "modules": self.modules,
        }

    # --- the entry point -------------------------------------------------------------------

    async def handle(self, job: Job) -> dict[str, Any]:
        """Answer one `debug_request` (its content is a DAP request) with a DAP response."""
        request = job.content
        self._parent = job
        if not isinstance(request.get("command"), str) or not request["command"]:
            return error_response(request, "a debug request needs a 'command' (a DAP request)")
        if not isinstance(request.get("seq", 0), int):
            return error_response(request, "a debug request's 'seq' must be an integer")
        if not isinstance(request.get("arguments", {}), dict):
            return error_response(request, "a debug request's 'arguments' must be an object")
        command = request["command"]
        if not debugpy_available():
            return error_response(
                request,
                "debugpy is not installed in the kernel's environment: "
                "pip install 'async-kernel[debug]' and restart the kernel",
            )
        try:
            if (local := self._local.get(command)) is not None:
                return await local(request)
            if command in _FORWARDED:
                return await self._forward(request)
        except DebugRequestError as e:
            return error_response(request, str(e))
        except Exception as e:
            log.exception("the debug request %r failed", command)
            return error_response(request, f"{command} failed: {type(e).__name__}: {e}")
        return error_response(request, f"unknown debug command {command!r}")

    @property
    def state(self) -> DebugState:
        """Breakpoints, stopped threads and the connection to debugpy (made on first use)."""
        if self._state is None:
            # Imported when first needed: aiologic costs ~20 ms at start-up.
            from async_kernel.requests._debugstate import DebugState

            self._state = DebugState(self._publish, lambda: self.on_stopped())
        return self._state

    def _publish(self, event: dict[str, Any]) -> None:
        self.outbox.publish("debug_event", event, parent=self._parent)

    @property
    def _client(self) -> DapClient:
        client = self.state.client
        if client is None or not self.state.attached:
            msg = "the debugger is not attached: send 'initialize' and 'attach' first"
            raise DebugRequestError(msg)
        return client

    async def _forward(self, request: dict[str, Any]) -> dict[str, Any]:
        response = await self._client.request(request)
        if response.get("success") and request["command"] in _RESUMING:
            # debugpy sends no `continued` event for these: the response says it.
            body = response.get("body") or {}
            thread_id = (request.get("arguments") or {}).get("threadId")
            self.state.resumed(thread_id, every=bool(body.get("allThreadsContinued")))
        return response

    # --- session ---------------------------------------------------------------------------

    async def initialize(self, request: dict[str, Any]) -> dict[str, Any]:
        """Start debugpy (the first time), connect to its adapter and pass `initialize` on."""
        import anyio

        if self._starting is None:
            self._starting = anyio.Lock()  # two frontends may initialize at once
        async with self._starting:
            if self._endpoint is None:
                listened: tuple[str, int] = await self._run_sync(self._listen)
                self._endpoint = listened
            host, port = self._endpoint
            if self.state.client is not None and not self.state.client.connected:
                self.state.detach(self.shell)  # the adapter went away: start a new session
            if self.state.client is None:
                self.state.connect(host, port)
            client = self.state.client
            if client is None:
                raise DebugRequestError("the connection to debugpy closed while it was made")
            with anyio.move_on_after(_INITIALIZE_WAIT):
                return await client.request(request)
            self.state.detach(self.shell)
        msg = (
            f"debugpy's adapter did not answer 'initialize' within {_INITIALIZE_WAIT:g} s "
            "(it may have failed): restart the kernel to debug again"
        )
        raise DebugRequestError(msg)

    def _listen(self) -> tuple[str, int]:
        """Start debugpy in this process; return where its adapter takes clients."""
        hide_from_debugger(threading.current_thread())
        history = getattr(self.shell.history_manager, "save_thread", None)
        if isinstance(history, threading.Thread):
            hide_from_debugger(history)
        tmp = os.path.dirname(self.cells.prefix())
        os.makedirs(tmp, mode=0o700, exist_ok=True)
        hook = sys.breakpointhook
        import debugpy

        try:
            host, port = debugpy.listen(("127.0.0.1", 0))
        finally:
            # debugpy installs a `breakpoint()` hook of its own; until a client attaches,
            # `breakpoint()` stays what it was (pdb, as in IPython).
            sys.breakpointhook = hook
        # The first session of the adapter, before any frontend's (see the module's text).
        anchor = DapClient(lambda _event: None)
        anchor.connect(str(host), int(port))
        self._anchor = anchor
        return str(host), int(port)

    async def attach(self, request: dict[str, Any]) -> dict[str, Any]:
        """Attach to this process: only the user's code is debugged, never the kernel's."""
        client = self.state.client
        if client is None or self._endpoint is None:
            raise DebugRequestError("send 'initialize' before 'attach'")
        if self.state.attached:
            raise DebugRequestError("already attached: send 'disconnect' first")
        arguments = dict(request.get("arguments") or {})
        host, port = self._endpoint
        arguments["connect"] = {"host": host, "port": port}
        arguments.setdefault("justMyCode", True)
        # A breakpoint stops its own thread only: the kernel, other subshells and `##thread`
        # cells go on (debugpy would stop every thread, and a step would resume them all).
        arguments.setdefault("stopAllThreadsOnSuspend", False)
        arguments.setdefault("steppingResumesAllThreads", False)
        rules = list(arguments.get("rules") or [])
        rules.append({"path": _KERNEL_DIR, "include": False})
        arguments["rules"] = rules
        response = await self.state.attach(client, {**request, "arguments": arguments})
        if response.get("success"):
            self.state.attached = True
            self.state.swap_breakpointhook(self.shell)
        return response

    async def configurationDone(self, request: dict[str, Any]) -> dict[str, Any]:
        """Done at attach (debugpy answers `attach` only after it): say it went well."""
        self._client  # noqa: B018 - raises unless attached
        return dap_response(request)

    async def disconnect(self, request: dict[str, Any]) -> dict[str, Any]:
        """Detach: the kernel goes on, breakpoints are gone, `breakpoint()` is pdb's again."""
        client = self._client
        arguments = {**(request.get("arguments") or {}), "terminateDebuggee": False}
        try:
            response = await client.request({**request, "arguments": arguments})
            # The adapter ends the session and then closes the connection: a frontend that
            # attaches again at once must find the adapter ready for a new session.
            await client.wait_closed(5.0)
        finally:
            self.state.detach(self.shell)
        return response

    def release(self, idents: Iterable[int]) -> bool:
        """Resume the threads `idents` where they are stopped in the debugger (an interrupt)."""
        return self._state is not None and self._state.release(idents)

    def close(self) -> None:
        """Detach at shutdown (nothing is sent: the kernel is going away)."""
        if self._state is not None:
            self._state.detach(self.shell)
        if self._anchor is not None:
            self._anchor.close()

    # --- cells and sources -----------------------------------------------------------------

    async def debugInfo(self, request: dict[str, Any]) -> dict[str, Any]:
        """What a frontend needs to find cells and restore its state."""
        return dap_response(
            request,
            body={
                "isStarted": self.state.attached,
                "hashMethod": self.cells.hash_method,
                "hashSeed": self.cells.hash_seed,
                "tmpFilePrefix": self.cells.prefix(),
                "tmpFileSuffix": self.cells.suffix,
                "breakpoints": [
                    {"source": source, "breakpoints": bps}
                    for source, bps in self.state.breakpoints.items()
                ],
                "stoppedThreads": sorted(self.state.stopped),
                "richRendering": True,
                "exceptionPaths": ["Python Exceptions"],
                "copyToGlobals": True,
            },
        )

    async def dumpCell(self, request: dict[str, Any]) -> dict[str, Any]:
        """Write a cell's source to the file it is compiled under (so breakpoints can be set)."""
        code = argument(request, "code", str)
        path = self.cells.name_of(code)
        await self._run_sync(lambda: files.write_private(path, code))
        return dap_response(request, body={"sourcePath": path})

    async def source(self, request: dict[str, Any]) -> dict[str, Any]:
        """Return the text of a source file (a cell file, or a module's)."""
        source = argument(request, "source", dict)
        path = source.get("path")
        if not isinstance(path, str):
            raise DebugRequestError("source needs 'source.path'")
        try:
            text = await self._run_sync(lambda: files.read(path))
        except OSError as e:
            raise DebugRequestError(f"source unavailable: {e}") from e
        return dap_response(request, body={"content": text})

    async def setBreakpoints(self, request: dict[str, Any]) -> dict[str, Any]:
        """Set a source's breakpoints (all of them: the list replaces the earlier one)."""
        client = self._client
        source = argument(request, "source", dict)
        path = source.get("path")
        breakpoints = request["arguments"].get("breakpoints") or []
        if not isinstance(path, str) or not path:
            raise DebugRequestError("setBreakpoints needs 'source.path'")
        if breakpoints and not await self._run_sync(lambda: os.path.isfile(path)):
            msg = f"no file {path!r}: send 'dumpCell' with the cell's code first"
            raise DebugRequestError(msg)
        response = await client.request(request)
        if response.get("success"):
            lines = [{"line": bp["line"]} for bp in response.get("body", {}).get("breakpoints", [])]
            if lines:
                self.state.breakpoints[path] = lines
            else:
                self.state.breakpoints.pop(path, None)
        return response
