"""What the debugger keeps between requests: the connection, breakpoints, stopped threads.

It also keeps what attaching changes in the process, and undoes it on detach: `breakpoint()`
stops in the attached debugger (`sys.breakpointhook` is debugpy's while attached, pdb's
otherwise), and IPython keeps a cell's leading empty lines, so that the lines a frontend
shows are the lines the cell is compiled with.
"""

from __future__ import annotations

import ast
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

import aiologic
import anyio
from IPython.core.inputtransformer2 import leading_empty_lines

from async_kernel._threads import hide_from_debugger
from async_kernel.requests._dap import DapClient, DapClosedError
from async_kernel.requests._frames import KERNEL_PREFIXES, LIBRARY_PREFIXES, debugger_prefixes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import FrameType

    from async_kernel.ipython._shell import AsyncInteractiveShell

__all__ = ("DebugState", "rich_in_frame")

log = logging.getLogger("async_kernel")

_ATTACH_TIMEOUT = 30.0
"""Seconds debugpy may take to answer `attach` (its adapter waits for the debuggee)."""


class DebugState:
    """The debugger's state; thread-safe where events (from the reader thread) touch it.

    Args:
        publish: Publishes a DAP event to the frontends.
        on_stopped: Called (in the reader thread) when a thread stops in the debugger.
    """

    def __init__(
        self, publish: Callable[[dict[str, Any]], None], on_stopped: Callable[[], None]
    ) -> None:
        self._publish = publish
        self._on_stopped = on_stopped
        self.client: DapClient | None = None
        """The connection to debugpy's adapter, once `initialize` made it."""
        self.attached = False
        """Whether `attach` succeeded (and no `disconnect` came since)."""
        self.breakpoints: dict[str, list[dict[str, Any]]] = {}
        """The breakpoints debugpy set, by source path."""
        self.stopped: set[int] = set()
        """The DAP ids of the threads stopped in the debugger (each with user frames)."""
        self._initialized = aiologic.Event()
        self._saved_hook: Callable[..., Any] | None = None
        self._removed_transform: int | None = None

    # --- connection ------------------------------------------------------------------------

    def connect(self, host: str, port: int) -> None:
        """Connect to debugpy's adapter."""
        self._initialized = aiologic.Event()
        client = DapClient(self._on_event, on_close=self._on_close)
        client.connect(host, port)
        self.client = client

    async def attach(self, client: DapClient, request: dict[str, Any]) -> dict[str, Any]:
        """Send `attach`: debugpy answers it after `initialized` and `configurationDone`."""
        result: dict[str, Any] = {}

        async def send_attach() -> None:
            result.update(await client.request(request))

        with anyio.fail_after(_ATTACH_TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(send_attach)
                await self._initialized
                await client.request({"command": "configurationDone", "seq": 0})
        return result

    def _on_close(self) -> None:
        if self.client is not None and not self.client.connected:
            log.info("the connection to debugpy closed")

    def detach(self, shell: AsyncInteractiveShell) -> None:
        """Forget the session and undo what attaching changed."""
        self.attached = False
        self.breakpoints.clear()
        self.stopped.clear()
        client, self.client = self.client, None
        if client is not None:
            client.close()
        self.restore_breakpointhook(shell)

    # --- what attaching changes ------------------------------------------------------------

    def swap_breakpointhook(self, shell: AsyncInteractiveShell) -> None:
        """`breakpoint()` stops in debugpy; a cell keeps its leading empty lines."""
        import debugpy

        if self._saved_hook is None:
            self._saved_hook = sys.breakpointhook
            sys.breakpointhook = debugpy.breakpoint
        cleanup = shell.input_transformer_manager.cleanup_transforms
        if self._removed_transform is None and leading_empty_lines in cleanup:
            self._removed_transform = cleanup.index(leading_empty_lines)
            cleanup.remove(leading_empty_lines)

    def restore_breakpointhook(self, shell: AsyncInteractiveShell) -> None:
        """Undo `swap_breakpointhook`."""
        if self._saved_hook is not None:
            sys.breakpointhook = self._saved_hook
            self._saved_hook = None
        if self._removed_transform is not None:
            cleanup = shell.input_transformer_manager.cleanup_transforms
            cleanup.insert(self._removed_transform, leading_empty_lines)
            self._removed_transform = None

    # --- events ----------------------------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        """An event from debugpy (in the reader thread): keep track, then publish it."""
        name = event.get("event")
        body = event.get("body") or {}
        if name == "initialized":
            self._initialized.set()
        elif name == "stopped":
            self._on_stopped()
            if body.get("allThreadsStopped"):
                # Which threads stopped is asked in another thread: the reader brings the answer.
                thread = threading.Thread(
                    target=self._resolve_stopped, args=(event,), name="async_kernel_debug_stopped"
                )
                hide_from_debugger(thread)
                thread.start()
                return
            if isinstance(body.get("threadId"), int):
                self.stopped.add(body["threadId"])
        elif name == "continued":
            if body.get("allThreadsContinued"):
                self.stopped.clear()
            else:
                self.stopped.discard(body.get("threadId", -1))
        self._publish(event)

    def resumed(self, thread_id: object, *, every: bool) -> None:
        """A thread (or `every` thread) was resumed by a request."""
        if every:
            self.stopped.clear()
        elif isinstance(thread_id, int):
            self.stopped.discard(thread_id)

    def _resolve_stopped(self, event: dict[str, Any]) -> None:
        """All threads stopped: record those waiting in debugpy over user frames, publish."""
        body = event.get("body") or {}
        try:
            found = self.threads_with_user_frames()
        except (DapClosedError, TimeoutError) as e:
            log.warning("could not list the stopped threads: %s", e)
            found = []
        if isinstance(body.get("threadId"), int):
            found.append(body["threadId"])
        self.stopped.update(found)
        self._publish(event)

    def threads_with_user_frames(self) -> list[int]:
        """The DAP ids of the threads suspended in debugpy with the user's frames beneath."""
        by_name = {t.name: t.ident for t in threading.enumerate()}
        frames = sys._current_frames()  # pyright: ignore[reportPrivateUsage]
        try:
            return [
                thread["id"]
                for thread in self.threads()
                if _suspended_in_user_code(frames.get(by_name.get(thread["name"], -1) or -1))
            ]
        finally:
            del frames  # the frames of other threads keep their locals alive

    def threads(self) -> list[dict[str, Any]]:
        """The threads debugpy lists (id and name), from a plain thread."""
        client = self.client
        if client is None:
            return []
        reply = client.request_sync({"command": "threads", "seq": 0})
        return list(reply.get("body", {}).get("threads", [])) if reply.get("success") else []

    # --- interrupts ------------------------------------------------------------------------

    def release(self, idents: Iterable[int]) -> bool:
        """Resume the threads `idents` if they are stopped in the debugger (for an interrupt).

        Called from a plain thread. Returns whether any was stopped.
        """
        if not self.stopped or self.client is None:
            return False
        wanted = set(idents)
        names = {t.name for t in threading.enumerate() if t.ident in wanted}
        try:
            ids = [
                t["id"] for t in self.threads() if t["name"] in names and t["id"] in self.stopped
            ]
            for thread_id in ids:
                # Forgotten before it runs again: its cell may end before the answer comes.
                self.stopped.discard(thread_id)
                self.client.request_sync(
                    {
                        "command": "continue",
                        "seq": 0,
                        "arguments": {"threadId": thread_id, "singleThread": True},
                    }
                )
                self._publish(
                    {
                        "type": "event",
                        "seq": 0,
                        "event": "continued",
                        "body": {"threadId": thread_id, "allThreadsContinued": False},
                    }
                )
        except (DapClosedError, TimeoutError) as e:
            log.warning("could not resume the stopped threads for an interrupt: %s", e)
            return False
        return bool(ids)


def _suspended_in_user_code(frame: FrameType | None) -> bool:
    """Whether a thread whose innermost frame is `frame` waits in debugpy over user frames."""
    debugger = debugger_prefixes()
    waiting = user = False
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(debugger):
            waiting = waiting or frame.f_code.co_name == "do_wait_suspend"
        elif not name.startswith(KERNEL_PREFIXES + LIBRARY_PREFIXES):
            user = True
        frame = frame.f_back
    return waiting and user


async def rich_in_frame(
    client: DapClient, request: dict[str, Any], name: str, frame_id: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A variable's mime bundle, formatted by IPython inside a stopped frame."""
    reply = await client.request(
        {
            "command": "evaluate",
            "seq": request.get("seq", 0),
            "arguments": {
                "expression": f"get_ipython().display_formatter.format({name})",
                "frameId": frame_id,
                "context": "clipboard",
            },
        }
    )
    if not reply.get("success"):
        return {}, {}
    try:
        data, metadata = ast.literal_eval(reply["body"]["result"])
    except (ValueError, SyntaxError, TypeError, KeyError):
        log.warning("could not read the rich representation of %r", name)
        return {}, {}
    return data, metadata
