"""ipykernel's kernel magics: `%connect_info`, `%qtconsole`, `%autosave`, `%clear`, `%less`, ...

They behave as in ipykernel 7.4: the same messages reach the client (a pager payload, a
javascript display, the same printed lines), so notebooks that use them run unchanged.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from IPython.core import page
from IPython.core.display import Javascript
from IPython.core.display_functions import display
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magics.code import CodeMagics, MacroToEdit
from IPython.utils import openpy

__all__ = ("CLEAR_SCREEN", "QTCONSOLE_CODE", "IPyKernelMagics")

CLEAR_SCREEN = "\x1b[H\x1b[2J"
"""What `%clear` prints: cursor home and erase the screen (what `clear` prints for ipykernel's
`TERM=xterm-color`). Consoles clear their screen; notebooks show nothing."""

QTCONSOLE_CODE = "from qtconsole import qtconsoleapp; qtconsoleapp.main()"
"""The code `%qtconsole` runs with this Python, as ipykernel does."""


def _runtime_dir() -> str | None:
    """Jupyter's runtime directory, where `--existing NAME` looks; None without jupyter_core."""
    try:
        from jupyter_core.paths import jupyter_runtime_dir
    except ImportError:
        return None
    return jupyter_runtime_dir()


@magics_class
class IPyKernelMagics(Magics):
    """The magics that ipykernel adds to IPython's, with ipykernel's behaviour."""

    def __init__(self, shell: Any = None) -> None:
        super().__init__(shell)
        self._consoles: list[subprocess.Popen[bytes]] = []

    def _connection_file(self) -> str:
        """The kernel's connection file, or `""` when the kernel was started without one."""
        return str(getattr(getattr(self.shell, "kernel", None), "connection_file", "") or "")

    @line_magic
    def edit(self, parameter_s: str = "", last_call: list[str] | None = None) -> None:
        """Ask the client to open an editor on a file, object, or input lines (`%edit -h`).

        A kernel has no terminal to run an editor in: the file and line go to the client as an
        `edit_magic` payload, as ipykernel sends them. Options `-n LINE`, `-p`, `-r` and the
        targets are those of IPython's `%edit`.
        """
        opts, args = self.parse_options(parameter_s, "prn:")
        try:
            filename, lineno, _ = CodeMagics._find_edit_target(  # pyright: ignore[reportPrivateUsage]
                self.shell, args, opts, last_call or ["", ""]
            )
        except MacroToEdit:
            print("Macros cannot be edited from a kernel: the editor runs in the client.")
            return
        payload = {
            "source": "edit_magic",
            "filename": str(Path(filename).resolve()),  # the client may run elsewhere
            "line_number": lineno,
        }
        self.shell.payload_manager.write_payload(payload)  # pyright: ignore[reportOptionalMemberAccess]

    @line_magic
    def clear(self, arg_s: str = "") -> None:
        """Clear the console's screen (a terminal escape, which notebooks ignore)."""
        sys.stdout.write(CLEAR_SCREEN)
        sys.stdout.flush()

    @line_magic
    def less(self, arg_s: str = "") -> None:
        """Show a file in the client's pager; `.py` files are syntax-highlighted."""
        self._page_file(arg_s)

    @line_magic
    def more(self, arg_s: str = "") -> None:
        """Show a file in the client's pager (the same as `%less`)."""
        self._page_file(arg_s)

    def _page_file(self, arg_s: str) -> None:
        """Page the file named `arg_s`.

        Raises:
            UsageError: No file name was given.
        """
        if not arg_s:
            msg = "Missing filename."
            raise UsageError(msg)
        if arg_s.endswith(".py"):
            text = self.shell.pycolorize(openpy.read_py_file(arg_s, skip_encoding_cookie=False))  # pyright: ignore[reportOptionalMemberAccess]
        else:
            text = Path(arg_s).read_text()
        page.page(text)

    @line_magic
    def man(self, arg_s: str = "") -> None:
        """Show the man page of a command in the client's pager."""
        text = self.shell.getoutput(f"man {arg_s} | col -b", split=False)  # pyright: ignore[reportOptionalMemberAccess]
        page.page(text)

    @line_magic
    def connect_info(self, arg_s: str = "") -> None:
        """Print the connection file, and how to connect another client to this kernel.

        `jupyter console --existing FILE` (or qtconsole) then works with the printed file
        name; it is the bare name when the file is in Jupyter's runtime directory, where
        `--existing` looks.
        """
        path = self._connection_file()
        try:
            info = Path(path).read_text() if path else None
        except OSError as e:
            info, path = None, f"{path}: {e}"
        if info is None:
            warnings.warn(
                f"Could not get connection info: {path or 'no connection file'}", stacklevel=2
            )
            return
        name = path
        if _runtime_dir() == str(Path(path).resolve().parent):
            name = Path(path).name
        print(info + "\n")
        print(
            "To connect another client to this kernel, save the JSON above in a file and run:\n"
            "    $> jupyter <app> --existing <file>\n"
            "or, on this machine, use the kernel's own connection file:\n"
            f"    $> jupyter <app> --existing {name}\n"
            "or, if this is the most recent Jupyter kernel you started, simply:\n"
            "    $> jupyter <app> --existing"
        )

    @line_magic
    def qtconsole(self, arg_s: str = "") -> None:
        """Open a Jupyter QtConsole connected to this kernel (extra arguments go to it)."""
        path = self._connection_file()
        if not path:
            warnings.warn(
                "Could not start qtconsole: the kernel has no connection file", stacklevel=2
            )
            return
        argv = [sys.executable, "-c", QTCONSOLE_CODE, "--existing", os.path.abspath(path)]
        argv += shlex.split(arg_s, posix=os.name == "posix")
        self._consoles = [p for p in self._consoles if p.poll() is None]
        try:
            # Its own session: an interrupt of the kernel's process group leaves it alone.
            console = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            warnings.warn(f"Could not start qtconsole: {e!r}", stacklevel=2)
            return
        self._consoles.append(console)  # kept, so that it is reaped rather than warned about

    @line_magic
    def autosave(self, arg_s: str = "") -> None:
        """Set the notebook's autosave interval in seconds (`%autosave 0` turns it off).

        Only the classic notebook acts on it (it runs the javascript it is sent); JupyterLab
        ignores it.

        Raises:
            UsageError: The interval is not an integer.
        """
        try:
            interval = int(arg_s)
        except ValueError:
            msg = f"%autosave requires an integer, got {arg_s!r}"
            raise UsageError(msg) from None
        script = f"IPython.notebook.set_autosave_interval({1000 * interval})"
        display(Javascript(script), include=["application/javascript"])
        print(f"Autosaving every {interval} seconds" if interval else "Autosave disabled")
