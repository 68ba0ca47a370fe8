"""Where a frame's code lives: the kernel, the event loops, the kernel's output path.

Interrupts are not raised in the kernel's output code, an event loop's code or the debugger's
(they would leave it half done), and their tracebacks do not show those frames (they say
nothing about the user's code); both ask the code's file name.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from typing import TYPE_CHECKING

from IPython.core.interactiveshell import InteractiveShell

from async_kernel.output import _routing, _stdio, _streams
from async_kernel.wire import _json, _outbox, _session, _sockets

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import FrameType

__all__ = (
    "KERNEL_PREFIXES",
    "LIBRARY_PREFIXES",
    "OUTPUT_FILES",
    "RUN_CODE",
    "debugger_prefixes",
    "loop_prefixes",
    "runs_user_code",
)

_KERNEL_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The `async_kernel` package."""

RUN_CODE = InteractiveShell.run_code.__code__
"""The code of IPython's `run_code`, whose frame runs a cell: the user's code is above it."""

_LOOP_PACKAGES = ("asyncio", "anyio", "trio", "sniffio", "outcome")
"""The event loops' packages (and the small ones they run on)."""


def _prefixes(directories: Iterable[str]) -> tuple[str, ...]:
    """Every spelling (as given, and with links resolved) of `directories`, ending in a slash."""
    found: set[str] = set()
    for directory in directories:
        found.add(os.path.join(directory, ""))
        found.add(os.path.join(os.path.realpath(directory), ""))
    return tuple(sorted(found))


KERNEL_PREFIXES = _prefixes([_KERNEL_DIR])
"""File name prefixes of the kernel's code (for `str.startswith`)."""

LIBRARY_PREFIXES = _prefixes(
    {
        path
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (path := sysconfig.get_paths().get(key))
    }
)
"""File name prefixes of the standard library and installed packages: not the user's code."""

OUTPUT_FILES = frozenset(
    module.__file__
    for module in (_routing, _stdio, _streams, _json, _outbox, _session, _sockets)
    if module.__file__ is not None
)
"""The modules of the kernel's output path, which user code enters through print and display."""


def debugger_prefixes() -> tuple[str, ...]:
    """File name prefixes of debugpy (and the pydevd inside it), once it is imported."""
    module = sys.modules.get("debugpy")
    file = getattr(module, "__file__", None)
    return _prefixes([os.path.dirname(file)]) if isinstance(file, str) else ()


def loop_prefixes() -> tuple[str, ...]:
    """File name prefixes of the event loops' packages imported so far."""
    directories: list[str] = []
    for name in _LOOP_PACKAGES:
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            directories.append(os.path.dirname(file))
    return _prefixes(directories)


def runs_user_code(frame: FrameType | None) -> bool:
    """Whether a thread whose innermost frame is `frame` is inside a cell's code right now."""
    while frame is not None:
        if frame.f_code is RUN_CODE:
            return True
        frame = frame.f_back
    return False
