"""The debug requests that look at the user's state: frames, variables, rich views, modules.

While a thread is stopped they are about its frames (debugpy answers, the kernel filters);
otherwise about the user's globals, which the kernel answers itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from async_kernel.requests import _debugfiles as files
from async_kernel.requests._dap import DebugRequestError, argument, dap_response
from async_kernel.requests._variables import VariableExplorer, is_user_variable

if TYPE_CHECKING:
    from async_kernel.ipython._shell import AsyncInteractiveShell
    from async_kernel.requests._dap import DapClient
    from async_kernel.requests._debugstate import DebugState

__all__ = ("InspectionRequests",)


class InspectionRequests:
    """`stackTrace`, `variables`, `inspectVariables`, `richInspectVariables`, `copyToGlobals`
    and `modules` (a mixin of `Debugger`, which provides the state and the connection)."""

    shell: AsyncInteractiveShell
    explorer: VariableExplorer

    if TYPE_CHECKING:

        @property
        def state(self) -> DebugState: ...

        @property
        def _client(self) -> DapClient: ...

        async def _forward(self, request: dict[str, Any]) -> dict[str, Any]: ...

    async def stackTrace(self, request: dict[str, Any]) -> dict[str, Any]:
        """The frames of a stopped thread (the kernel's own frames are left out by debugpy)."""
        return await self._forward(request)

    async def variables(self, request: dict[str, Any]) -> dict[str, Any]:
        """Children of a variable: the kernel's own references, or debugpy's."""
        reference = argument(request, "variablesReference", int)
        if self.explorer.knows(reference):
            return dap_response(request, body={"variables": self.explorer.children(reference)})
        response = await self._forward(request)
        if response.get("success"):
            body = response.setdefault("body", {})
            body["variables"] = [
                v for v in body.get("variables", []) if is_user_variable(str(v.get("name", "")))
            ]
        return response

    async def inspectVariables(self, request: dict[str, Any]) -> dict[str, Any]:
        """The user's global variables (whether or not the debugger is attached)."""
        return dap_response(request, body={"variables": self.explorer.inspect(self.shell.user_ns)})

    async def richInspectVariables(self, request: dict[str, Any]) -> dict[str, Any]:
        """A variable's rich representation (its mime bundle), in a stopped frame or globally."""
        name = argument(request, "variableName", str)
        if not name.isidentifier():
            raise DebugRequestError(f"{name!r} is not a variable name")
        frame_id = request["arguments"].get("frameId")
        if self.state.stopped and isinstance(frame_id, int):
            from async_kernel.requests._debugstate import rich_in_frame

            data, metadata = await rich_in_frame(self._client, request, name, frame_id)
        else:
            result = self.shell.user_expressions({name: name})[name]
            if result.get("status") != "ok":
                raise DebugRequestError(f"{name}: {result.get('ename')}: {result.get('evalue')}")
            data, metadata = result.get("data", {}), result.get("metadata", {})
        metadata = {k: v for k, v in metadata.items() if k in data}
        return dap_response(request, body={"data": data, "metadata": metadata})

    async def copyToGlobals(self, request: dict[str, Any]) -> dict[str, Any]:
        """Copy a variable of a stopped frame into the user's globals."""
        client = self._client
        dst = argument(request, "dstVariableName", str)
        src = argument(request, "srcVariableName", str)
        frame_id = argument(request, "srcFrameId", int)
        if not (dst.isidentifier() and src.isidentifier()):
            raise DebugRequestError("dstVariableName and srcVariableName must be identifiers")
        response = await client.request(
            {
                "command": "setExpression",
                "seq": request.get("seq", 0),
                "arguments": {
                    "expression": f"globals()[{dst!r}]",
                    "value": src,
                    "frameId": frame_id,
                },
            }
        )
        return {**response, "command": request["command"]}

    async def modules(self, request: dict[str, Any]) -> dict[str, Any]:
        """The loaded modules that have Python source, a page at a time."""
        arguments = request.get("arguments") or {}
        body = files.modules(arguments.get("startModule"), arguments.get("moduleCount"))
        return dap_response(request, body=body)
