"""Request/response measurements: start-up, kernel_info, execute, stdout and memory.

Every measurement runs the kernels interleaved (A B B A ...), in blocks, so that drift of the
machine (frequency scaling, other load) hits every kernel alike. A kernel that fails is
skipped for the rest of that measurement, marked broken (`run.py` restarts it) and its cell
shows the error.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernels import BenchError, KernelDef, KernelHandle, KernelTimeout, peek_reply
from procstat import cpu_seconds, cpu_used, thread_cpu_ns
from report import Row

__all__ = (
    "PASS",
    "STALL",
    "Config",
    "abba",
    "burst",
    "describe",
    "execute_pipelined",
    "execute_sequential",
    "interleave",
    "kernel_info",
    "mark_na",
    "memory",
    "print_code",
    "set_errors",
    "startup",
    "stdout",
)

PASS = {"code": "pass", "silent": False, "store_history": True}
STALL = 0.1
"""A gap between consecutive pipelined replies longer than this (seconds) is a stall."""


@dataclass(frozen=True)
class Config:
    """Sample counts and time limits of one run."""

    quick: bool
    """Whether this is the quick (< 3 minutes) configuration."""
    startups: int
    """Fresh kernels started per kernel kind."""
    kernel_info: int
    """kernel_info round trips per kernel."""
    execute: int
    """Sequential executes per kernel."""
    bursts: int
    """Pipelined bursts per kernel (at most; see `burst_budget`)."""
    comm_idle: int
    """Comm echoes per kernel on an idle kernel."""
    cell_seconds: float
    """How long the sleeping cells of the comm measurement run."""
    cell_rounds: int
    """Sleeping cells per kernel and kind of cell."""
    stdout_rounds: int
    """Printing cells per kernel."""
    burst_size: int = 2000
    burst_budget: float | None = None
    """Quick mode: start no new round of pipelined bursts after this many seconds."""
    stdout_lines: int = 200_000
    rss_executes: int = 2000
    block: int = 50
    """Consecutive samples per kernel before switching to the next one."""
    timeout: float = 10.0
    """Limit for one ordinary request (seconds)."""
    start_timeout: float = 60.0
    echo_timeout: float = 2.0
    """Limit for one comm echo (or subshell execute) while a cell runs; longer is 'no answer'."""
    control_bursts: int = 20
    """Pipelined bursts per kernel while kernel_info pings go to control (at most)."""
    control_burst_size: int = 2000
    control_interval: float = 0.02
    """Seconds between the control pings sent during a burst."""
    thread_execute: int = 1000
    """Sequential executes per kernel of each kind (queue cell, `##thread` cell)."""
    thread_bursts: int = 5
    """Pipelined bursts per kernel of each kind of cell."""
    thread_burst_size: int = 2000
    big_comm_bytes: int = 50_000_000
    big_comm_rounds: int = 10
    """50 MB comm echoes per kernel."""
    png_bytes: int = 5_000_000
    png_rounds: int = 10
    """5 MB PNG display cells per kernel."""
    growth_executes: int = 100_000
    """Executes per kernel over which RSS growth is measured (each kind of cell)."""
    growth_budget: float | None = None
    """Quick mode: stop a growth measurement after this many seconds (per kernel and cell)."""
    replay_window: int = 65_536
    """Signatures a kernel remembers against replays: the growth is measured once the kernel
    has received more messages than this, so that filling the guard does not count."""
    growth_fill_guard: bool = True
    """Send executes before measuring growth until the replay guard is full."""
    idle_seconds: float = 30.0
    """How long the idle kernels' CPU time is watched."""

    @classmethod
    def make(cls, *, quick: bool) -> Config:
        """The quick (< 3 min on 2 cores) or the full configuration."""
        if quick:
            return cls(
                quick=True,
                startups=3,
                kernel_info=300,
                execute=300,
                bursts=4,
                burst_budget=25.0,
                comm_idle=100,
                cell_seconds=3.5,
                cell_rounds=1,
                stdout_rounds=1,
                control_bursts=1,
                control_burst_size=500,
                thread_execute=50,
                thread_bursts=1,
                thread_burst_size=200,
                big_comm_rounds=2,
                png_rounds=2,
                growth_executes=20_000,
                growth_budget=2.0,
                growth_fill_guard=False,
                idle_seconds=5.0,
            )
        return cls(
            quick=False,
            startups=10,
            kernel_info=2000,
            execute=1000,
            bursts=20,
            comm_idle=500,
            cell_seconds=6.0,
            cell_rounds=2,
            stdout_rounds=3,
        )


def abba(keys: list[str], round_: int) -> list[str]:
    """The kernel order of one round: forward in even rounds, backward in odd ones (A B B A)."""
    return keys if round_ % 2 == 0 else keys[::-1]


def describe(exc: BaseException) -> str:
    """A short, one-line reason for a table cell."""
    if isinstance(exc, BenchError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def interleave(
    handles: dict[str, KernelHandle],
    rounds: int,
    step: Callable[[KernelHandle], None],
    *,
    budget: float | None = None,
) -> dict[str, str]:
    """Call `step` once per kernel per round, in A B B A order; return the errors by kernel.

    Args:
        handles: The kernels, in table order.
        rounds: How many times every kernel takes a step.
        step: One block of samples on one kernel; raises on failure.
        budget: Start no new round after this many seconds (the first always runs).
    """
    errors: dict[str, str] = {}
    start = time.perf_counter()
    for r in range(rounds):
        if r and budget is not None and time.perf_counter() - start > budget:
            break
        for key in abba(list(handles), r):
            if key in errors:
                continue
            try:
                step(handles[key])
            except Exception as exc:
                errors[key] = describe(exc)
                handles[key].broken = True
    return errors


def set_errors(rows: list[Row], errors: dict[str, str]) -> list[Row]:
    for row in rows:
        for key, err in errors.items():
            row.cell(key).error = err
    return rows


def mark_na(rows: list[Row], handles: dict[str, KernelHandle], text: str = "n/a") -> None:
    """Show `text` in `rows` for the protocol-only kernels (the floor)."""
    for key, h in handles.items():
        if h.kdef.protocol_only:
            for row in rows:
                row.cell(key).value = text


def startup(defs: dict[str, KernelDef], log_dir: Path, cfg: Config) -> list[Row]:
    """Seconds from `start_kernel()` to the first kernel_info_reply, fresh kernels each time."""
    row = Row("startup", "start-up: start_kernel() → kernel_info_reply", "s")
    errors: dict[str, str] = {}
    for r in range(cfg.startups):
        for key in abba(list(defs), r):
            if key in errors:
                continue
            handle = KernelHandle(defs[key], log_dir)
            try:
                row.cell(key).samples.append(handle.start(cfg.start_timeout))
            except Exception as exc:
                errors[key] = describe(exc)
            finally:
                handle.close()
    return set_errors([row], errors)


def kernel_info(handles: dict[str, KernelHandle], cfg: Config) -> list[Row]:
    """Round trip of kernel_info_request on an idle kernel (reply on shell)."""
    row = Row("kernel_info", "kernel_info round trip", "ms", scale=1e3, digits=3)

    def step(h: KernelHandle) -> None:
        for _ in range(cfg.block):
            _, rtt, _ = h.request("shell", "kernel_info_request", timeout=cfg.timeout)
            row.cell(h.kdef.key).samples.append(rtt)

    return set_errors([row], interleave(handles, math.ceil(cfg.kernel_info / cfg.block), step))


def execute_sequential(handles: dict[str, KernelHandle], cfg: Config) -> list[Row]:
    """`execute_request "pass"`, one at a time: until both the reply and idle arrived."""
    latency = Row("exec_seq", 'execute "pass" sequential, reply + idle', "ms", scale=1e3, digits=3)
    rate = Row("exec_seq_rate", 'execute "pass" sequential', "req/s", digits=0)
    cpu = Row(
        "exec_seq_cpu",
        'execute "pass" sequential: kernel CPU per execute, all threads',
        "ms",
        scale=1e3,
        digits=3,
    )
    used: dict[str, float] = {}

    def step(h: KernelHandle) -> None:
        pid = h.pid
        before = (cpu_seconds(pid), thread_cpu_ns(pid)) if pid is not None else None
        for _ in range(cfg.block):
            reply, _, done = h.request("shell", "execute_request", PASS, timeout=cfg.timeout)
            if reply["content"]["status"] != "ok":
                raise BenchError(f"execute failed: {reply['content'].get('ename')}")
            latency.cell(h.kdef.key).samples.append(done)
        if pid is not None and before is not None:
            used[h.kdef.key] = used.get(h.kdef.key, 0.0) + cpu_used(pid, before)

    errors = interleave(handles, math.ceil(cfg.execute / cfg.block), step)
    for key, cell in latency.cells.items():
        if cell.samples:
            rate.cell(key).value = len(cell.samples) / sum(cell.samples)
            if key in used:
                cpu.cell(key).value = used[key] / len(cell.samples)
    return set_errors([latency, rate, cpu], errors)


def burst(
    h: KernelHandle,
    n: int,
    cfg: Config,
    made: list[float] | None = None,
    *,
    content: dict[str, Any] = PASS,
) -> tuple[float, list[float], int]:
    """Send `n` executes of "pass" back to back, then collect all replies.

    Args:
        h: The kernel.
        n: How many requests.
        cfg: The run's settings.
        made: Receives the kernel's own time stamp (header date) of each reply, if given.
        content: The execute_request content, if not `PASS`.

    Returns:
        Send time of the first request, arrival time of every reply, number of error replies.
    """
    ids: set[str] = set()
    t0 = time.perf_counter()
    for _ in range(n):
        ids.add(h.send("shell", "execute_request", content, watch=False)[0])
    arrivals: list[float] = []
    failed = 0
    last = time.perf_counter()
    while len(arrivals) < n:
        events = h.pump(0.5)
        for channel, frames, t in events:
            if channel == "shell":
                parent_id, status, stamp = peek_reply(frames)
                if parent_id in ids:
                    arrivals.append(t)
                    if made is not None and stamp is not None:
                        made.append(stamp)
                    failed += status != "ok"
                    last = t
        if not events:
            h.check_alive()
            if time.perf_counter() - last > cfg.timeout:
                raise KernelTimeout(f"{n - len(arrivals)} of {n} replies missing")
    h.drain(quiet=0.1)  # the tail of busy/execute_input/idle on iopub
    return t0, arrivals, failed


def execute_pipelined(handles: dict[str, KernelHandle], cfg: Config) -> list[Row]:
    """Bursts of `execute_request "pass"` sent without waiting: throughput and stalls."""
    n = cfg.burst_size
    rate = Row("exec_pipe", f'execute "pass" pipelined x{n:,}', "req/s", digits=0)
    rate.higher_is_better = True
    stalls = Row("exec_stalls", f"pipelined stalls (reply gap > {STALL * 1e3:.0f} ms)")
    stalls.digits = 0
    kernel_stalls = Row(
        "exec_stalls_kernel",
        f"pipelined stalls, kernel side (gap > {STALL * 1e3:.0f} ms between reply header dates)",
    )
    kernel_stalls.digits = 0
    gaps: dict[str, list[float]] = {k: [] for k in handles}
    made_gaps: dict[str, list[float]] = {k: [] for k in handles}
    bad: dict[str, int] = dict.fromkeys(handles, 0)

    def step(h: KernelHandle) -> None:
        made: list[float] = []
        t0, arrivals, failed = burst(h, n, cfg, made)
        rate.cell(h.kdef.key).samples.append(n / (arrivals[-1] - t0))
        gaps[h.kdef.key].extend(b - a for a, b in itertools.pairwise(arrivals))
        made_gaps[h.kdef.key].extend(b - a for a, b in itertools.pairwise(made))
        bad[h.kdef.key] += failed

    errors = interleave(handles, cfg.bursts, step, budget=cfg.burst_budget)
    for row, table in ((stalls, gaps), (kernel_stalls, made_gaps)):
        for key, values in table.items():
            if not values:
                continue
            cell = row.cell(key)
            cell.value = sum(g > STALL for g in values)
            cell.note = f"max gap {max(values) * 1e3:.0f} ms"
    for key in gaps:
        if bad[key]:
            rate.cell(key).note = f"{bad[key]} error replies"
    for key, cell in rate.cells.items():
        stalls.cell(key).note += f", bursts: {len(cell.samples)}"
    return set_errors([rate, stalls, kernel_stalls], errors)


def memory(handles: dict[str, KernelHandle], cfg: Config) -> list[Row]:
    """VmRSS of the kernel process right after start-up and after `rss_executes` executes."""
    mib = 1 / 2**20
    before = Row("rss_start", "RSS after start-up", "MiB", scale=mib, digits=1)
    after = Row("rss_exec", f"RSS after {cfg.rss_executes:,} executes", "MiB", scale=mib)
    after.digits = 1

    def step(h: KernelHandle) -> None:
        before.cell(h.kdef.key).value = h.rss()
        left = cfg.rss_executes
        while left > 0:
            burst(h, min(500, left), cfg)
            left -= 500
        time.sleep(0.2)
        after.cell(h.kdef.key).value = h.rss()

    return set_errors([before, after], interleave(handles, 1, step))


def _check_lines(text: str, n: int) -> str:
    """Return "yes" if `text` is exactly the lines 0 .. n-1, else what went wrong."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for i, line in enumerate(lines):
        if line != str(i):
            return f"NO: line {i} is {line[:20]!r}"
    return "yes" if len(lines) == n else f"NO: {len(lines):,} of {n:,} lines"


def print_code(n: int) -> str:
    """The printing cell of the stdout row: `n` short lines, `print(i)` for i in 0 .. n-1."""
    return f"for _i in range({n}):\n    print(_i)\n"


def stdout(handles: dict[str, KernelHandle], cfg: Config) -> list[Row]:
    """One cell printing `stdout_lines` short lines: time, messages, bytes and completeness."""
    n = cfg.stdout_lines
    code = print_code(n)
    elapsed = Row("stdout_time", f"stdout {n:,} lines: send → idle", "s")
    messages = Row("stdout_msgs", "stdout: stream messages", digits=0)
    volume = Row("stdout_bytes", "stdout: bytes on iopub", "MiB", scale=1 / 2**20)
    complete = Row("stdout_ok", "stdout: all lines, in order")
    rows = [elapsed, messages, volume, complete]
    protocol_only = {k: h for k, h in handles.items() if h.kdef.protocol_only}
    for key in protocol_only:
        for row in rows:
            row.cell(key).value = "n/a"

    def step(h: KernelHandle) -> None:
        key = h.kdef.key
        content = {"code": code, "silent": False, "store_history": False}
        bytes0 = h.bytes_received["iopub"]
        msg_id, t0 = h.send("shell", "execute_request", content)
        chunks: list[str] = []

        def until(channel: str, msg: dict[str, Any]) -> bool:
            if channel != "iopub" or msg["parent_header"].get("msg_id") != msg_id:
                return False
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                chunks.append(msg["content"]["text"])
            return msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"

        t_idle, _ = h.wait(until, 120.0)
        reply, _, _ = h.await_reply(msg_id, cfg.timeout)
        if reply["content"]["status"] != "ok":
            raise BenchError(f"print cell failed: {reply['content'].get('ename')}")
        elapsed.cell(key).samples.append(t_idle - t0)
        messages.cell(key).samples.append(len(chunks))
        volume.cell(key).samples.append(h.bytes_received["iopub"] - bytes0)
        verdict = _check_lines("".join(chunks), n)
        previous = complete.cell(key).value
        complete.cell(key).value = verdict if previous in (None, "yes") else previous

    measured = {k: h for k, h in handles.items() if k not in protocol_only}
    return set_errors(rows, interleave(measured, cfg.stdout_rounds, step))


def sample_during_cell(
    h: KernelHandle,
    code: str,
    cfg: Config,
    probe: Callable[[], float],
    *,
    settle: float = 0.1,
    pace: float = 0.005,
) -> tuple[list[float], int]:
    """Run `probe()` repeatedly while `code` runs on the main shell; return samples, timeouts.

    Sampling starts `settle` seconds after the cell's `execute_input` and stops early enough
    that a probe answered at `cfg.echo_timeout` still arrives while the cell runs; one probe
    that times out ends the sampling.
    """
    content = {"code": code, "silent": False, "store_history": False}
    cell_id, _ = h.send("shell", "execute_request", content)

    def started(channel: str, msg: dict[str, Any]) -> bool:
        return (
            channel == "iopub"
            and msg["msg_type"] == "execute_input"
            and msg["parent_header"].get("msg_id") == cell_id
        )

    t_start, _ = h.wait(started, cfg.timeout)
    time.sleep(settle)
    stop = t_start + cfg.cell_seconds - cfg.echo_timeout - 0.2
    samples: list[float] = []
    timeouts = 0
    while time.perf_counter() < stop:
        try:
            samples.append(probe())
        except KernelTimeout:
            timeouts += 1
            break
        time.sleep(pace)
    reply, _, _ = h.await_reply(cell_id, cfg.cell_seconds + cfg.timeout, idle=True)
    if reply["content"]["status"] != "ok":
        raise BenchError(f"the main-shell cell failed: {reply['content'].get('ename')}")
    h.drain()  # late answers
    return samples, timeouts
