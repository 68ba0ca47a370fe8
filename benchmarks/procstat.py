"""A kernel process's CPU time and wake-ups, read from its own accounting in `/proc/<pid>`."""

from __future__ import annotations

import os
from pathlib import Path

from kernels import BenchError

__all__ = ("context_switches", "cpu_seconds", "cpu_used", "thread_cpu_ns")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`, all threads, from `/proc/<pid>/stat`.

    Counts threads that have ended too, but in clock ticks (10 ms).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError as exc:
        raise BenchError(f"cannot read CPU time: {exc}") from exc
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and ")"
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def thread_cpu_ns(pid: int) -> dict[str, int]:
    """Nanoseconds on a CPU of each live thread of `pid` (`/proc/<pid>/task/*/schedstat`)."""
    out: dict[str, int] = {}
    for path in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            out[path.parent.name] = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):  # the thread ended meanwhile
            continue
    return out


def cpu_used(pid: int, before: tuple[float, dict[str, int]]) -> float:
    """Seconds of CPU used by `pid` since `before = (cpu_seconds(pid), thread_cpu_ns(pid))`.

    The per-thread nanoseconds give the precision, the tick count covers threads that ended:
    the larger of the two.
    """
    ticks0, threads0 = before
    threads = thread_cpu_ns(pid)
    precise = sum(ns - threads0.get(tid, 0) for tid, ns in threads.items()) / 1e9
    return max(precise, cpu_seconds(pid) - ticks0)


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of all threads of `pid` (its wake-ups)."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:  # the thread ended meanwhile
            continue
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split()[1])
    return total
