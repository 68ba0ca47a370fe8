"""What a kernel process costs over time: RSS growth per execute, and CPU while idle.

Both read the kernel process's own accounting in `/proc/<pid>` (pid from the provisioner), so
nothing runs inside the kernel but the cells being measured (and `gc.collect()` before each RSS
reading, so that garbage not yet collected does not count as growth).
"""

from __future__ import annotations

import time

from kernels import BenchError, KernelHandle
from measures import Config, burst, describe, interleave, set_errors
from procstat import context_switches, cpu_seconds, cpu_used, thread_cpu_ns
from report import Row

__all__ = ("idle_cpu", "memory_growth", "watch_idle")

GROWTH_CELLS = {
    "pass": 'execute "pass"',
    "x = [0]*1000; del x": "execute `x = [0]*1000; del x`",
}
GC_CELL = "import gc\ngc.collect()\n"
GROWTH_BURST = 500
SETTLE = 1.0
"""Seconds the kernels are left alone before the idle window starts."""


TRIM_SETTLE = 1.5
"""Seconds a kernel is left alone before its RSS is read: longer than async-kernel's
`MemoryTrim` quiet time (1 s), so memory it has freed and hands back when quiet is not counted."""


def _rss_settled(h: KernelHandle, cfg: Config) -> int:
    h.run_code(GC_CELL, cfg.timeout)
    time.sleep(TRIM_SETTLE)
    return h.rss()


def memory_growth(handles: dict[str, KernelHandle], cfg: Config) -> list[Row]:
    """RSS growth per 10,000 executes (`store_history=False`), once the replay guard is full."""
    mib = 1 / 2**20
    how = (
        f"after > {cfg.replay_window:,} messages received (replay guard full)"
        if cfg.growth_fill_guard
        else "replay guard NOT filled first (quick mode)"
    )
    rows = {
        code: Row(f"growth_{i}", f"RSS growth per 10k {label}, {how}", "MiB", scale=mib)
        for i, (code, label) in enumerate(GROWTH_CELLS.items())
    }
    for row in rows.values():
        row.digits = 3

    def fill_guard(h: KernelHandle, content: dict[str, object]) -> None:
        while h.sent <= cfg.replay_window:
            burst(h, min(GROWTH_BURST, cfg.replay_window + 1 - h.sent), cfg, content=content)

    def measure(h: KernelHandle, code: str) -> None:
        content = {"code": code, "silent": False, "store_history": False}
        # Untimed: first-use allocations, and memory freed late from earlier rows.
        warm = GROWTH_BURST if cfg.growth_budget is not None else cfg.growth_executes // 10
        for _ in range(max(1, warm // GROWTH_BURST)):
            burst(h, GROWTH_BURST, cfg, content=content)
        received = h.sent
        before = _rss_settled(h, cfg)
        done, start = 0, time.perf_counter()
        while done < cfg.growth_executes:
            if cfg.growth_budget is not None and time.perf_counter() - start > cfg.growth_budget:
                break
            n = min(GROWTH_BURST, cfg.growth_executes - done)
            _, _, failed = burst(h, n, cfg, content=content)
            if failed:
                raise BenchError(f"{failed} of {n} executes of {code!r} failed")
            done += n
        after = _rss_settled(h, cfg)
        cell = rows[code].cell(h.kdef.key)
        cell.value = (after - before) * 10_000 / done
        cell.note = (
            f"{before * mib:.1f} → {after * mib:.1f} MiB over {done:,} executes, "
            f"{received:,} messages before"
        )

    def step(h: KernelHandle) -> None:
        if cfg.growth_fill_guard:
            fill_guard(h, {"code": "pass", "silent": False, "store_history": False})
        for code in GROWTH_CELLS:
            measure(h, code)

    return set_errors(list(rows.values()), interleave(handles, 1, step))


def idle_cpu(handles: dict[str, KernelHandle], cfg: Config) -> list[Row]:
    """CPU time and wake-ups of every kernel over the same idle window (all watched at once)."""
    seconds = cfg.idle_seconds
    cpu = Row("idle_cpu", f"idle kernel: CPU time over {seconds:g} s", "ms", scale=1e3)
    cpu.digits = 1
    wakeups = Row("idle_wakeups", "idle kernel: context switches per second (all threads)")
    wakeups.digits = 1
    errors = watch_idle(handles, seconds, cpu, wakeups)
    for key in handles:
        if cpu.cell(key).value is None and key not in errors:
            errors[key] = "the provisioner reports no pid"
    return set_errors([cpu, wakeups], errors)


def watch_idle(
    handles: dict[str, KernelHandle], seconds: float, cpu: Row, wakeups: Row
) -> dict[str, str]:
    """Fill `cpu` and `wakeups` from one idle window of `seconds`; return errors by kernel.

    Every kernel is drained, left alone `SETTLE` seconds and then watched over the same window.
    """
    errors: dict[str, str] = {}
    start: dict[str, tuple[tuple[float, dict[str, int]], int]] = {}
    for key, h in handles.items():
        try:
            h.drain()
        except Exception as exc:
            errors[key] = describe(exc)
    time.sleep(SETTLE)
    for key, h in handles.items():
        if key not in errors and h.pid is not None:
            cpu0 = (cpu_seconds(h.pid), thread_cpu_ns(h.pid))
            start[key] = (cpu0, context_switches(h.pid))
    t0 = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - t0
    for key, (cpu0, switches0) in start.items():
        h = handles[key]
        try:
            h.check_alive()
            assert h.pid is not None
            cpu.cell(key).value = cpu_used(h.pid, cpu0)
            wakeups.cell(key).value = (context_switches(h.pid) - switches0) / elapsed
        except Exception as exc:
            errors[key] = describe(exc)
            h.broken = True
    return errors
