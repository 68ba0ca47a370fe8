"""Where a cell runs: `##thread` cells against queue cells, and subshells beside a busy shell.

`##thread` as a cell's first line makes async-kernel run it in a worker thread; to ipykernel it
is a comment, so its rows show the same cell run as usual (the same-run comparison). Subshells
are created with `create_subshell_request` on control (JEP 91, protocol 5.5) and addressed with
`subshell_id` in the execute's header; a subshell execute that gets no reply within
`Config.echo_timeout` while the main shell blocks counts as 'no answer' and ends that round.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from kernels import BenchError, KernelHandle
from measures import PASS, Config, burst, interleave, mark_na, sample_during_cell, set_errors
from report import Row

__all__ = ("subshell_execute", "thread_cells")

THREAD_PASS = {**PASS, "code": "##thread\npass"}
BLOCK_CELL = "import time\ntime.sleep({seconds})\n"
PACE = 0.005
"""Pause between subshell executes while the main shell blocks (the client shares the CPU)."""
SETTLE = 0.1
"""Wait after `execute_input` so that the blocking cell really runs when the first one goes."""


def _execute(h: KernelHandle, content: dict[str, Any], timeout: float, **kw: Any) -> float:
    """One execute until reply and idle; return the seconds it took."""
    reply, _, done = h.request("shell", "execute_request", content, timeout=timeout, **kw)
    if reply["content"]["status"] != "ok":
        raise BenchError(f"execute failed: {reply['content'].get('ename')}")
    return done


def _ms(key: str, label: str) -> Row:
    return Row(key, label, "ms", scale=1e3, digits=3)


def _rate(key: str, label: str) -> Row:
    return Row(key, label, "req/s", digits=0, higher_is_better=True)


def thread_cells(handles: dict[str, KernelHandle], cfg: Config) -> list[Row]:
    """`##thread` "pass" against queue "pass": sequential latency and pipelined rate."""
    n = cfg.thread_burst_size
    seq = {
        "queue": _ms("queue_seq", 'queue cell "pass" sequential, reply + idle'),
        "thread": _ms("thread_seq", '`##thread` cell "pass" sequential, reply + idle'),
    }
    rate = {
        "queue": _rate("queue_pipe", f'queue cell "pass" pipelined x{n:,}'),
        "thread": _rate("thread_pipe", f'`##thread` cell "pass" pipelined x{n:,}'),
    }
    contents = {"queue": PASS, "thread": THREAD_PASS}
    rows = [seq["queue"], seq["thread"], rate["queue"], rate["thread"]]
    mark_na(rows, handles)
    measured = {k: h for k, h in handles.items() if not h.kdef.protocol_only}

    def seq_step(h: KernelHandle) -> None:
        for _ in range(cfg.block):
            for kind, content in contents.items():  # alternate, so drift hits both alike
                seq[kind].cell(h.kdef.key).samples.append(_execute(h, content, cfg.timeout))

    def burst_step(h: KernelHandle) -> None:
        for kind, content in contents.items():
            t0, arrivals, failed = burst(h, n, cfg, content=content)
            cell = rate[kind].cell(h.kdef.key)
            cell.samples.append(n / (arrivals[-1] - t0))
            if failed:
                cell.note = f"{failed} error replies"

    errors = interleave(measured, math.ceil(cfg.thread_execute / cfg.block), seq_step)
    live = {k: h for k, h in measured.items() if k not in errors}
    errors |= interleave(live, cfg.thread_bursts, burst_step)
    return set_errors(rows, errors)


def _create_subshell(h: KernelHandle, cfg: Config) -> str:
    reply, _, _ = h.request("control", "create_subshell_request", timeout=cfg.timeout)
    if reply["content"].get("status", "ok") != "ok":
        raise BenchError(f"create_subshell_request failed: {reply['content']}")
    return reply["content"]["subshell_id"]


def _during_block(h: KernelHandle, subshell_id: str, cfg: Config) -> tuple[list[float], int]:
    """Execute "pass" on the subshell while the main shell sleeps; return samples, timeouts."""
    code = BLOCK_CELL.format(seconds=cfg.cell_seconds)

    def probe() -> float:
        return _execute(h, PASS, cfg.echo_timeout, subshell_id=subshell_id)

    return sample_during_cell(h, code, cfg, probe, settle=SETTLE, pace=PACE)


def subshell_execute(handles: dict[str, KernelHandle], cfg: Config) -> list[Row]:
    """Execute "pass" on a subshell: main shell idle, and main shell in `time.sleep`."""
    idle = _ms("sub_idle", 'subshell execute "pass", main shell idle')
    busy = _ms("sub_busy", 'subshell execute "pass" during `time.sleep` cell on the main shell')
    rows = [idle, busy]
    mark_na(rows, handles)
    subshells: dict[str, str] = {}
    timeouts: dict[str, int] = {}
    measured = {k: h for k, h in handles.items() if not h.kdef.protocol_only}
    for key, h in measured.items():
        if not h.subshells:
            for row in rows:
                row.cell(key).value = "n/a (no subshells)"
    measured = {k: h for k, h in measured.items() if h.subshells}

    def open_step(h: KernelHandle) -> None:
        subshells[h.kdef.key] = _create_subshell(h, cfg)

    def idle_step(h: KernelHandle) -> None:
        sid = subshells[h.kdef.key]
        for _ in range(cfg.block):
            idle.cell(h.kdef.key).samples.append(_execute(h, PASS, cfg.timeout, subshell_id=sid))

    def busy_step(h: KernelHandle) -> None:
        key = h.kdef.key
        samples, n = _during_block(h, subshells[key], cfg)
        cell = busy.cell(key)
        cell.samples.extend(samples)
        timeouts[key] = timeouts.get(key, 0) + n
        if timeouts[key]:
            limit = f"{cfg.echo_timeout:g} s"
            cell.note = f"{len(cell.samples)} answered, {timeouts[key]} not within {limit}"
            if not cell.samples:
                cell.value, cell.note = f"no answer within {limit}", ""

    errors: dict[str, str] = {}
    try:
        errors |= interleave(measured, 1, open_step)
        live = {k: h for k, h in measured.items() if k not in errors}
        errors |= interleave(live, 1, idle_step)
        live = {k: h for k, h in live.items() if k not in errors}
        errors |= interleave(live, cfg.cell_rounds, busy_step)
    finally:
        for key, sid in subshells.items():
            h = handles[key]
            try:
                h.request(
                    "control", "delete_subshell_request", {"subshell_id": sid}, timeout=cfg.timeout
                )
            except Exception as exc:
                h.broken = True
                print(f"[{key}] deleting the subshell failed: {exc!r}", file=sys.stderr)
    return set_errors(rows, errors)
