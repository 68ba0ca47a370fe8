"""A test-side debug client: DAP requests as `debug_request`s over a `Driver`, and the events.

Every wait has a timeout (`Driver.wait_until`). Events are looked for after a given arrival
number, so a test waits for the *next* `stopped`, not one left over from an earlier test.
"""

from __future__ import annotations

import itertools
from typing import Any

from kernel_driver import Driver

__all__ = ("DebugClient",)

DEBUG_TIMEOUT = 30.0
"""Seconds a debug reply may take (the first `initialize` starts debugpy's adapter)."""


class DebugClient:
    """Sends DAP requests to a kernel and finds the debug events it publishes."""

    def __init__(self, driver: Driver) -> None:
        self.d = driver
        self._seq = itertools.count(1)

    def send(self, command: str, arguments: dict[str, Any] | None = None, **extra: Any) -> str:
        """Send a DAP request as a `debug_request` on control; return its msg_id."""
        content = {"type": "request", "seq": next(self._seq), "command": command, **extra}
        if arguments is not None:
            content["arguments"] = arguments
        return self.d.send("debug_request", content, channel="control")

    def reply(self, msg_id: str) -> dict[str, Any]:
        """The DAP response of the debug request `msg_id` (after its idle)."""
        return self.d.reply(msg_id, DEBUG_TIMEOUT)["content"]

    def request(self, command: str, **arguments: Any) -> dict[str, Any]:
        """Send a DAP request and return its response."""
        return self.reply(self.send(command, arguments))

    def ok(self, command: str, **arguments: Any) -> dict[str, Any]:
        """Send a DAP request, check that it succeeded, return its response."""
        response = self.request(command, **arguments)
        assert response["success"], response
        assert response["status"] == "ok", response
        assert response["command"] == command, response
        return response

    def mark(self) -> int:
        """The arrival number of the last message so far: look for events after it."""
        self.d.drain()
        return max((n for n, _ in self.d.debug_events), default=0)

    def events(self, event: str, after: int = 0) -> list[dict[str, Any]]:
        """The bodies of the `event` events that arrived after arrival number `after`."""
        return [
            m["content"].get("body", {})
            for n, m in self.d.debug_events
            if n > after and m["content"].get("event") == event
        ]

    def wait_event(self, event: str, after: int = 0) -> dict[str, Any]:
        """Wait for an `event` event after `after`; return its body."""
        found = self.d.wait_until(
            lambda: self.events(event, after), f"a {event!r} debug event", DEBUG_TIMEOUT
        )
        return found[0]

    # --- sessions --------------------------------------------------------------------------

    def attach(self) -> None:
        """initialize, attach and configurationDone, as JupyterLab does."""
        self.ok(
            "initialize",
            clientID="tests",
            clientName="tests",
            adapterID="python",
            pathFormat="path",
            linesStartAt1=True,
            columnsStartAt1=True,
            supportsVariableType=True,
            supportsVariablePaging=True,
            supportsRunInTerminalRequest=True,
            locale="en",
        )
        self.ok("attach")
        self.ok("configurationDone")

    def disconnect(self) -> None:
        """End the session (the kernel goes on)."""
        self.ok("disconnect", restart=False, terminateDebuggee=False)

    def break_at(self, code: str, *lines: int) -> str:
        """Dump a cell and set breakpoints on `lines` of it; return its file name."""
        path = self.ok("dumpCell", code=code)["body"]["sourcePath"]
        reply = self.ok(
            "setBreakpoints",
            source={"path": path},
            breakpoints=[{"line": line} for line in lines],
            sourceModified=False,
        )
        assert [bp["line"] for bp in reply["body"]["breakpoints"]] == list(lines), reply
        return path

    def stopped_thread(self, after: int) -> int:
        """Wait for a `stopped` event after `after`; return the stopped thread's DAP id."""
        return self.wait_event("stopped", after)["threadId"]

    def frames(self, thread_id: int) -> list[dict[str, Any]]:
        """The stack frames of a stopped thread, innermost first."""
        return self.ok("stackTrace", threadId=thread_id)["body"]["stackFrames"]

    def locals(self, frame_id: int) -> dict[str, str]:
        """The local variables of a stopped frame: name -> value (its repr)."""
        scopes = self.ok("scopes", frameId=frame_id)["body"]["scopes"]
        reference = scopes[0]["variablesReference"]
        variables = self.ok("variables", variablesReference=reference)["body"]["variables"]
        return {v["name"]: v["value"] for v in variables}
