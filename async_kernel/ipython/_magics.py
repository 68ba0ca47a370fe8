"""The kernel's IPython magics: `%callers` lists the live callers, `%subshell` the subshells."""

from __future__ import annotations

import io
import threading
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, line_magic, magics_class

from async_kernel.callers._caller import Caller
from async_kernel.wire._job import current_job

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console
    from rich.table import Table

__all__ = ("CallersTable", "KernelMagics", "SubshellInfo")

# A fragment, not rich's default full page: it is embedded in a notebook's output area.
_HTML_FORMAT = (
    "<pre style=\"font-family:Menlo,'DejaVu Sans Mono',consolas,'Courier New',monospace;"
    'line-height:normal">{code}</pre>'
)


class CallersTable:
    """A snapshot of the live callers that renders as text and as HTML."""

    def __init__(self, callers: list[Caller] | None = None) -> None:
        """Take the snapshot.

        Args:
            callers: The callers to show; all registered callers by default.
        """
        self.callers = Caller.all_callers(running_only=False) if callers is None else callers
        self.current = threading.get_ident()

    def table(self) -> Table:
        """Return the rich table: one row per caller, the current thread's marked with ▶."""
        from rich.table import Table  # imported when shown: rich costs ~25 ms at start-up

        table = Table(title="Callers (▶ = this thread)")
        for column in ("", "name", "backend", "running", "protected", "thread"):
            table.add_column(column)
        for caller in sorted(self.callers, key=lambda c: c.name):
            here = caller.ident == self.current
            table.add_row(
                "▶" if here else "",
                caller.name,
                caller.backend,
                "yes" if caller.running else "no",
                "yes" if caller.protected else "no",
                str(caller.ident),
                style="bold" if here else None,
            )
        return table

    def _console(self) -> Console:
        from rich.console import Console

        # Not `force_jupyter`: in a kernel rich would display the table instead of recording it.
        console = Console(
            record=True,
            file=io.StringIO(),
            width=100,
            color_system="truecolor",
            force_jupyter=False,
        )
        console.print(self.table())
        return console

    def __repr__(self) -> str:
        return self._console().export_text()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        console = self._console()
        return {
            "text/plain": console.export_text(clear=False),
            "text/html": console.export_html(inline_styles=True, code_format=_HTML_FORMAT),
        }


class SubshellInfo:
    """Which subshell the current code runs in, and the kernel's subshells."""

    def __init__(self, current: str | None, subshells: list[str]) -> None:
        """Take the snapshot.

        Args:
            current: The id of the current subshell, or None in the main shell.
            subshells: The ids of all subshells.
        """
        self.current = current
        self.subshells = subshells

    def __repr__(self) -> str:
        lines = [f"current: {self.current or 'main shell'}", f"subshells: {len(self.subshells)}"]
        lines += [f"  {'▶' if sid == self.current else ' '} {sid}" for sid in self.subshells]
        return "\n".join(lines)


@magics_class
class KernelMagics(Magics):
    """Magics that look into the kernel's machinery.

    Args:
        shell: The IPython shell.
        subshell_ids: Returns the ids of the kernel's subshells.
    """

    def __init__(self, shell: Any = None, subshell_ids: Callable[[], list[str]] = list) -> None:
        super().__init__(shell)
        self._subshell_ids = subshell_ids

    @line_magic
    def callers(self, line: str = "") -> CallersTable:
        """Show the live callers: name, backend, running, protected, and ▶ for this thread's."""
        return CallersTable()

    @line_magic
    def subshell(self, line: str = "") -> SubshellInfo:
        """Show the subshell this cell runs in (or the main shell) and list all subshells."""
        job = current_job.get()
        return SubshellInfo(job.subshell_id if job is not None else None, self._subshell_ids())
