"""A kernel with a GUI event loop on: `%gui qt` (Qt offscreen), idle cost and kernel_info.

Each kernel (not the floor, which has no `%gui`) runs
`os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")` and `%gui qt` in a cell, is left
alone for one idle window (all kernels at once, as in the idle rows), then answers kernel_info
round trips (interleaved as in the plain kernel_info row); `%gui` turns it off at the end. A
kernel where `%gui qt` fails (no PyQt6) shows the error in its cells; one that stops answering
shows how many round trips it answered first.
"""

from __future__ import annotations

import math

from kernels import BenchError, KernelHandle, KernelTimeout
from measures import Config, interleave, mark_na, set_errors
from report import Row
from resources import watch_idle

__all__ = ("gui_loop",)

GUI_ON = 'import os\nos.environ.setdefault("QT_QPA_PLATFORM", "offscreen")\n%gui qt\n'
GUI_CHECK = "from IPython import get_ipython\nassert get_ipython().active_eventloop == 'qt'\n"


def gui_loop(handles: dict[str, KernelHandle], cfg: Config) -> list[Row]:
    """kernel_info round trips and idle CPU with `%gui qt` on."""
    seconds = cfg.idle_seconds
    info = Row("gui_kernel_info", "kernel_info round trip, `%gui qt` on", "ms", 1e3, 3)
    cpu = Row(
        "gui_idle_cpu", f"idle kernel, `%gui qt` on: CPU time over {seconds:g} s", "ms", 1e3, 1
    )
    wakeups = Row("gui_idle_wakeups", "idle kernel, `%gui qt` on: context switches per second")
    wakeups.digits = 1
    rows = [info, cpu, wakeups]
    mark_na(rows, handles)
    measured = {k: h for k, h in handles.items() if not h.kdef.protocol_only}

    def on(h: KernelHandle) -> None:
        for code in (GUI_ON, GUI_CHECK):
            try:
                h.run_code(code, cfg.timeout)
            except KernelTimeout as exc:
                raise BenchError(f"{exc} to a cell right after `%gui qt`") from exc

    def step(h: KernelHandle) -> None:
        samples = info.cell(h.kdef.key).samples
        for _ in range(cfg.block):
            try:
                _, rtt, _ = h.request("shell", "kernel_info_request", timeout=cfg.timeout)
            except KernelTimeout as exc:
                raise BenchError(f"{exc} (after {len(samples)} answered)") from exc
            samples.append(rtt)

    errors = interleave(measured, 1, on)
    live = {k: h for k, h in measured.items() if k not in errors}
    # The idle window first: a kernel that stops answering in the round trips is still measured.
    idle_errors = watch_idle(live, seconds, cpu, wakeups)
    info_errors = interleave(live, math.ceil(cfg.kernel_info / cfg.block), step)
    set_errors([cpu, wakeups], idle_errors)
    set_errors([info], idle_errors | info_errors)
    live = {k: h for k, h in live.items() if k not in idle_errors and k not in info_errors}
    for h in live.values():
        try:
            h.run_code("%gui\n", cfg.timeout)
        except BenchError:
            h.broken = True
    return set_errors(rows, errors)
