"""Comm echo round trips: idle, during an awaiting cell, and during a blocking cell.

A cell run on the kernel registers the comm target `bench_echo` with the `comm` package; the
target echoes every `comm_msg` back with `comm.send`. The client opens a comm and times
`comm_msg` → echoed `comm_msg` on iopub. While a cell runs, each echo may take at most
`Config.echo_timeout` seconds; the first one that does not come back is counted as a timeout and
ends that round, so a kernel that cannot answer during a cell shows "no answer within 2 s", never
a hang.
"""

from __future__ import annotations

import sys
import uuid
from functools import partial
from typing import Any

from kernels import BenchError, KernelHandle
from measures import Config, interleave, sample_during_cell
from report import Row

__all__ = ("TARGET", "Echo", "comm_echo")

TARGET = "bench_echo"
SETUP = f"""
import comm as _bench_comm

def _bench_echo_target(c, _open_msg):
    c.on_msg(lambda msg: c.send(msg["content"]["data"]))

_bench_comm.get_comm_manager().register_target({TARGET!r}, _bench_echo_target)
"""
AWAIT_CELL = "import asyncio\nawait asyncio.sleep({seconds})\n"
BLOCK_CELL = "import time\ntime.sleep({seconds})\n"
PACE = 0.005
"""Pause between echoes while a cell runs, so the client does not spin the CPU it shares."""
SETTLE = 0.1
"""Wait after `execute_input` so that the cell is really sleeping when the first echo goes out."""


class Echo:
    """An open echo comm on one kernel, plus the subshell used while the main shell blocks."""

    def __init__(self, h: KernelHandle, cfg: Config) -> None:
        self.h = h
        self.cfg = cfg
        self.comm_id = uuid.uuid4().hex
        self.seq = 0
        self.subshell_id: str | None = None
        h.run_code(SETUP, cfg.timeout)
        h.send("shell", "comm_open", {"comm_id": self.comm_id, "target_name": TARGET, "data": {}})
        self.round_trip(timeout=cfg.timeout)  # the comm is open and echoing
        if h.subshells:
            reply, _, _ = h.request("control", "create_subshell_request", timeout=cfg.timeout)
            if reply["content"].get("status", "ok") != "ok":
                raise BenchError(f"create_subshell_request failed: {reply['content']}")
            self.subshell_id = reply["content"]["subshell_id"]

    def round_trip(self, timeout: float, subshell_id: str | None = None) -> float:
        """Send one comm_msg and wait for its echo on iopub; return the seconds it took."""
        self.seq += 1
        seq, comm_id = self.seq, self.comm_id
        content = {"comm_id": comm_id, "data": {"seq": seq}}
        _, t0 = self.h.send("shell", "comm_msg", content, subshell_id=subshell_id, watch=False)

        def echoed(channel: str, msg: dict[str, Any]) -> bool:
            c = msg["content"]
            return (
                channel == "iopub"
                and msg["msg_type"] == "comm_msg"
                and c.get("comm_id") == comm_id
                and c.get("data", {}).get("seq") == seq
            )

        t, _ = self.h.wait(echoed, timeout)
        return t - t0

    def during_cell(self, code: str, subshell_id: str | None) -> tuple[list[float], int]:
        """Echo repeatedly while `code` runs on the main shell; return samples and timeouts."""
        probe = partial(self.round_trip, self.cfg.echo_timeout, subshell_id)
        return sample_during_cell(self.h, code, self.cfg, probe, settle=SETTLE, pace=PACE)

    def close(self) -> None:
        """Delete the subshell; failures only matter to later rows, which will show them."""
        if self.subshell_id is not None:
            content = {"subshell_id": self.subshell_id}
            self.h.request("control", "delete_subshell_request", content, timeout=self.cfg.timeout)


def _ms_row(key: str, label: str) -> Row:
    return Row(key, label, "ms", scale=1e3, digits=3)


def _record(row: Row, key: str, samples: list[float], timeouts: int, cfg: Config) -> None:
    cell = row.cell(key)
    cell.samples.extend(samples)
    if not timeouts:
        return
    if cell.samples:
        cell.note = f"{len(cell.samples)} answered, {timeouts} not within {cfg.echo_timeout:g} s"
    else:
        cell.value = f"no answer within {cfg.echo_timeout:g} s"


def comm_echo(handles: dict[str, KernelHandle], cfg: Config) -> list[Row]:
    """Comm echo round trip: idle, during `await asyncio.sleep`, during `time.sleep`."""
    idle = _ms_row("comm_idle", "comm echo, idle")
    awaiting = _ms_row("comm_await", "comm echo during `await asyncio.sleep` cell")
    blocked = _ms_row("comm_block", "comm echo during `time.sleep` cell, main shell")
    sub = _ms_row("comm_block_sub", "comm echo during `time.sleep` cell, subshell")
    rows = [idle, awaiting, blocked, sub]
    # (row, cell code, send the echoes on the subshell)
    during = ((awaiting, AWAIT_CELL, False), (blocked, BLOCK_CELL, False), (sub, BLOCK_CELL, True))
    for key, h in handles.items():
        if h.kdef.protocol_only:
            for row in rows:
                row.cell(key).value = "n/a"
    measured = {k: h for k, h in handles.items() if not h.kdef.protocol_only}
    echoes: dict[str, Echo] = {}
    timeouts: dict[tuple[str, str], int] = {}
    errors: dict[str, str] = {}

    def open_echo(h: KernelHandle) -> None:
        echoes[h.kdef.key] = Echo(h, cfg)
        if echoes[h.kdef.key].subshell_id is None:
            sub.cell(h.kdef.key).value = "n/a (no subshells)"

    def idle_step(h: KernelHandle) -> None:
        echo = echoes[h.kdef.key]
        for _ in range(cfg.block):
            idle.cell(h.kdef.key).samples.append(echo.round_trip(cfg.timeout))

    def cell_step(h: KernelHandle, row: Row, code: str, on_subshell: bool) -> None:
        key, echo = h.kdef.key, echoes[h.kdef.key]
        if on_subshell and echo.subshell_id is None:
            return
        subshell_id = echo.subshell_id if on_subshell else None
        samples, n = echo.during_cell(code.format(seconds=cfg.cell_seconds), subshell_id)
        timeouts[key, row.key] = timeouts.get((key, row.key), 0) + n
        _record(row, key, samples, timeouts[key, row.key], cfg)

    try:
        errors |= interleave(measured, 1, open_echo)
        live = {k: h for k, h in measured.items() if k not in errors}
        errors |= interleave(live, -(-cfg.comm_idle // cfg.block), idle_step)
        for row, code, on_subshell in during:
            live = {k: h for k, h in measured.items() if k not in errors}
            step = partial(cell_step, row=row, code=code, on_subshell=on_subshell)
            errors |= interleave(live, cfg.cell_rounds, step)
    finally:
        for key, echo in echoes.items():
            try:
                echo.close()
            except Exception as exc:
                echo.h.broken = True
                print(f"[{key}] deleting the echo subshell failed: {exc!r}", file=sys.stderr)
    for row in rows:
        for key, err in errors.items():
            cell = row.cell(key)
            if not cell.samples and cell.value is None:
                cell.error = err
    return rows
