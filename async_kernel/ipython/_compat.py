"""The shell as notebooks and libraries written for ipykernel expect to find it.

Libraries decide that they run in a Jupyter kernel (and render widgets, HTML or MIME bundles
instead of terminal text) by looking at the shell, the config and the loaded modules:

- rich: `get_ipython().__class__.__name__ == "ZMQInteractiveShell"`;
- plotly's default renderer: that name, and a class from a module under `ipykernel.`;
- tqdm.autonotebook (and `tqdm.auto`): `"ipykernel.zmqshell" in sys.modules`;
- scripts: `"IPKernelApp" in get_ipython().config` (which holds the connection file).

The kernel's shell is therefore `ZMQInteractiveShell`, a subclass of `AsyncInteractiveShell`
that names `ipykernel.zmqshell` as its module; `shell_module()` is a module of that name, which
the kernel puts in `sys.modules` while it runs (`ProcessPatches`), whether or not ipykernel is
installed. The shell also has ipykernel's parent API (`parent_header`, `get_parent`,
`set_parent`, `set_thread_parent`, `reset_thread_parent`) and its kernel magics.
"""

from __future__ import annotations

import importlib.machinery
import types
from typing import TYPE_CHECKING, Any

from async_kernel.ipython._ipykernel_magics import IPyKernelMagics
from async_kernel.ipython._shell import AsyncInteractiveShell
from async_kernel.output._routing import current_parent, reset_thread_parent, set_thread_parent
from async_kernel.wire._ipykernel import job_for, parent_message
from async_kernel.wire._job import current_job

if TYPE_CHECKING:
    from collections.abc import Mapping

    from async_kernel.wire._job import Job

__all__ = ("NOTEBOOK_ENVIRON", "SHELL_MODULE", "ZMQInteractiveShell", "shell_module")

SHELL_MODULE = "ipykernel.zmqshell"
"""The module name that libraries look for in `sys.modules` to detect a Jupyter kernel."""

NOTEBOOK_ENVIRON = {
    "TERM": "xterm-color",
    "CLICOLOR": "1",
    "FORCE_COLOR": "1",
    "CLICOLOR_FORCE": "1",
    "PAGER": "cat",
    "GIT_PAGER": "cat",
}
"""The environment ipykernel sets for code in a kernel: colours on (the output area shows ANSI
colours), pagers off (a pager cannot run without a terminal)."""


class ZMQInteractiveShell(AsyncInteractiveShell):
    """The kernel's shell, under the name and module that libraries look for.

    Besides the name, it has ipykernel's parent API. A *parent* is the request that output
    belongs to, handed out as a message dict; wherever one is taken, a header dict or a
    `Job` works too.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        section = self.config.IPKernelApp  # created if missing: its presence is what is checked
        connection_file = getattr(self.kernel, "connection_file", "")
        if connection_file and "connection_file" not in section:
            section.connection_file = connection_file

    def init_magics(self) -> None:
        """Add ipykernel's kernel magics (`%connect_info`, `%qtconsole`, `%autosave`, ...)."""
        super().init_magics()
        self.register_magics(IPyKernelMagics)
        self.magics_manager.register_alias("ed", "edit")

    @property
    def parent_header(self) -> dict[str, Any]:
        """The request that output produced here belongs to, as a message dict (`{}` if none)."""
        return parent_message(current_parent())

    @parent_header.setter
    def parent_header(self, value: Mapping[str, Any] | Job | None) -> None:
        self.set_parent(value)

    def get_parent(self) -> dict[str, Any]:
        """Return `parent_header`: the request output produced here belongs to."""
        return self.parent_header

    def set_parent(self, parent: Mapping[str, Any] | Job | None) -> None:
        """Send the output of the current context (this task or thread) to `parent` from now on.

        Tasks and `Caller` calls started afterwards inherit it, as they inherit the request.
        """
        current_job.set(job_for(parent))

    def set_thread_parent(self, parent: Mapping[str, Any] | Job | None) -> tuple[Any, ...]:
        """Send the output of this thread and context to `parent` until `reset_thread_parent`.

        Returns:
            The tokens to give to `reset_thread_parent` (in the same thread and context).
        """
        job = job_for(parent)
        return (set_thread_parent(job), current_job.set(job))

    def reset_thread_parent(self, tokens: tuple[Any, ...]) -> None:
        """Undo the `set_thread_parent` call that returned `tokens`."""
        thread_token, context_token = tokens
        current_job.reset(context_token)
        reset_thread_parent(thread_token)


def shell_module() -> types.ModuleType:
    """Return a module named `ipykernel.zmqshell` that holds the kernel's shell class."""
    module = types.ModuleType(
        SHELL_MODULE,
        "async-kernel's shell under ipykernel's module name, which libraries look for to know "
        "that they run in a Jupyter kernel. It is not ipykernel.",
    )
    module.__file__ = __file__
    module.__spec__ = importlib.machinery.ModuleSpec(SHELL_MODULE, None, origin=__file__)
    module.ZMQInteractiveShell = ZMQInteractiveShell  # pyright: ignore[reportAttributeAccessIssue]
    return module


ZMQInteractiveShell.__module__ = SHELL_MODULE
