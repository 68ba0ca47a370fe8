"""What the debugger reads and writes outside the kernel: cell files, sources, modules."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("CellFiles", "modules", "read", "write_private")


@dataclass(frozen=True, slots=True)
class CellFiles:
    """How the kernel names cell files (the IPython layer knows; the wiring passes it down)."""

    hash_method: str
    """The hash of a cell's source, as `debugInfo` names it (`Murmur2`)."""
    hash_seed: int
    """The hash seed."""
    prefix: Callable[[], str]
    """Returns what precedes the hash in a cell file's name (the directory and a separator)."""
    suffix: str
    """What follows the hash."""
    name_of: Callable[[str], str]
    """Returns the file name that a cell with this source is compiled under."""


def write_private(path: str, text: str) -> None:
    """Write `text` to `path`, readable by the user alone from the first byte."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def read(path: str) -> str:
    """Return the text of the file `path` (undecodable bytes replaced).

    Raises:
        OSError: The file cannot be read.
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def modules(start: object, count: object) -> dict[str, Any]:
    """The DAP `modules` body: the loaded modules with Python source, from `start`, `count` of them.

    Ids are positions in `sys.modules`; a missing or invalid `count` means all the rest.
    """
    loaded = list(sys.modules.values())
    first = start if isinstance(start, int) and start >= 0 else 0
    end = first + count if isinstance(count, int) and count > 0 else len(loaded)
    found: list[dict[str, Any]] = []
    for i, module in enumerate(loaded[first:end], first):
        origin = getattr(getattr(module, "__spec__", None), "origin", None)
        if isinstance(origin, str) and origin.endswith(".py"):
            found.append({"id": i, "name": module.__name__, "path": origin})
    return {"modules": found, "totalModules": len(loaded)}
