"""The kernel's child processes: the ones a SIGINT to its process group would reach.

When the kernel leads its process group (jupyter_client starts it so), an interrupt goes to the
whole group and the processes a cell started stop with the cell. A kernel that a launcher
runs inside its own group (a gateway's launcher, a container's init, `docker exec`) must not
signal that group, which holds the launcher too; it signals its descendants in the group
instead, one by one: the same processes, without the launcher.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

__all__ = ("group_descendants", "signal_descendants")

log = logging.getLogger("async_kernel")


def _linux_table() -> dict[int, tuple[int, int]] | None:
    """pid → (ppid, pgid) of every process, from `/proc` (None where there is no `/proc`)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    table: dict[int, tuple[int, int]] = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # it ended while we looked
            continue
        if len(fields) > 2 and fields[0] != "Z":
            table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]))
    return table


def _psutil_table() -> dict[int, tuple[int, int]] | None:
    try:
        import psutil  # pyright: ignore[reportMissingModuleSource]
    except ImportError:
        return None
    table: dict[int, tuple[int, int]] = {}
    for process in psutil.process_iter(["pid", "ppid"]):
        try:
            table[process.info["pid"]] = (process.info["ppid"], os.getpgid(process.info["pid"]))
        except OSError:
            continue
    return table


def group_descendants() -> list[int]:
    """Return the live descendants of this process that are in its process group.

    Descendants that started a group of their own (`start_new_session=True`) are left out, as
    a signal to the group would leave them out. Linux reads `/proc`; elsewhere psutil is used
    if it is installed, and nothing is found without it.
    """
    table = _linux_table()
    if table is None:
        table = _psutil_table()
    if table is None:
        return []
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    group = os.getpgrp()
    found: list[int] = []
    pending = list(children.get(os.getpid(), ()))
    while pending:
        pid = pending.pop()
        if table[pid][1] == group:
            found.append(pid)
        pending.extend(children.get(pid, ()))
    return found


def signal_descendants(signum: int = signal.SIGINT) -> list[int]:
    """Send `signum` to `group_descendants()`; return the pids it reached."""
    reached: list[int] = []
    for pid in group_descendants():
        try:
            os.kill(pid, signum)
        except ProcessLookupError:  # it ended in between
            continue
        except OSError as e:
            log.warning("could not signal the child process %s: %s", pid, e)
            continue
        reached.append(pid)
    return reached
