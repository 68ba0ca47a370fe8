"""Control-channel latency while the shell is flooded with pipelined executes.

Each burst sends `execute_request "pass"` on shell as fast as the client's queue takes them
(non-blocking sends, so a full shell queue never delays a ping), and meanwhile a
`kernel_info_request` on control every `Config.control_interval` seconds, on a fixed schedule
(open loop: a slow answer does not delay the next ping, so a stall shows in every ping it
covers). Pings stop when the last execute reply has arrived; their replies are then awaited.
"""

from __future__ import annotations

import itertools
import time

from kernels import KernelHandle, KernelTimeout, peek_reply
from measures import PASS, STALL, Config, interleave, set_errors
from report import Row

__all__ = ("control_under_load",)

SEND_BATCH = 50
"""Executes sent between two looks at the clock and the sockets."""
PROGRESS_TIMEOUT = 60.0
"""A burst fails after this many seconds without an execute reply: ipykernel 7.4 pauses its
replies in these bursts for more than the ordinary request limit (13.7 s seen on 2 cores)."""


def _burst_with_pings(
    h: KernelHandle, n: int, cfg: Config
) -> tuple[float, list[float], list[float], int, int]:
    """One burst of `n` executes with control pings.

    Returns:
        First send time, execute reply arrivals, ping round trips, pings without answer and
        error replies to the executes.
    """
    pending = [h.prepare("execute_request", PASS) for _ in range(n)]
    ids = {msg_id for msg_id, _ in pending}
    pending.reverse()  # pop() from the end sends them in order
    pings: dict[str, float] = {}
    rtts: list[float] = []
    arrivals: list[float] = []
    failed = 0
    t0 = next_ping = time.perf_counter()
    last = t0

    def receive(timeout: float) -> None:
        nonlocal failed, last
        events = h.pump(timeout)
        for channel, frames, t in events:
            if channel == "iopub":
                continue
            parent_id, status, _ = peek_reply(frames)
            if channel == "shell" and parent_id in ids:
                arrivals.append(t)
                failed += status != "ok"
                last = t
            elif channel == "control" and parent_id in pings:
                rtts.append(t - pings.pop(parent_id))
        if not events and timeout > 0:
            h.check_alive()

    while len(arrivals) < n:
        now = time.perf_counter()
        if now >= next_ping:
            msg_id, frames = h.prepare("kernel_info_request")
            sent = h.try_send("control", frames)
            if sent is not None:
                pings[msg_id] = sent
            next_ping += cfg.control_interval
            if next_ping < now:  # the client itself fell behind: do not send a salvo
                next_ping = now + cfg.control_interval
        blocked = False
        for _ in range(min(SEND_BATCH, len(pending))):
            if h.try_send("shell", pending[-1][1]) is None:
                blocked = True
                break
            pending.pop()
        wait = max(0.0, next_ping - time.perf_counter())
        receive(min(wait, 0.005) if blocked else wait if not pending else 0.0)
        if time.perf_counter() - last > PROGRESS_TIMEOUT:
            raise KernelTimeout(f"{n - len(arrivals)} of {n} execute replies missing")
    deadline = time.perf_counter() + cfg.timeout
    while pings and time.perf_counter() < deadline:
        receive(0.1)
    h.drain(quiet=0.1)
    return t0, arrivals, rtts, len(pings), failed


def control_under_load(handles: dict[str, KernelHandle], cfg: Config) -> list[Row]:
    """kernel_info round trips on control during pipelined bursts; reply gaps and throughput."""
    n, every = cfg.control_burst_size, cfg.control_interval * 1e3
    latency = Row(
        "control_load",
        f"control kernel_info during pipelined bursts (one every {every:.0f} ms; median / p99)",
        "ms",
        scale=1e3,
        digits=3,
        tail=0.99,
    )
    during = "bursts with control pings:"
    gaps_row = Row(
        "control_load_gaps", f"{during} shell reply gaps > {STALL * 1e3:.0f} ms", digits=0
    )
    rate = Row("control_load_rate", f'{during} execute "pass" x{n:,}', "req/s", digits=0)
    rate.higher_is_better = True
    gaps: dict[str, list[float]] = {k: [] for k in handles}
    lost: dict[str, int] = dict.fromkeys(handles, 0)
    bad: dict[str, int] = dict.fromkeys(handles, 0)

    def step(h: KernelHandle) -> None:
        key = h.kdef.key
        t0, arrivals, rtts, unanswered, failed = _burst_with_pings(h, n, cfg)
        rate.cell(key).samples.append(n / (arrivals[-1] - t0))
        latency.cell(key).samples.extend(rtts)
        gaps[key].extend(b - a for a, b in itertools.pairwise(arrivals))
        lost[key] += unanswered
        bad[key] += failed

    errors = interleave(handles, cfg.control_bursts, step)
    for key, values in gaps.items():
        if not values:
            continue
        cell = gaps_row.cell(key)
        cell.value = sum(g > STALL for g in values)
        bursts = len(rate.cell(key).samples)
        cell.note = f"max gap {max(values) * 1e3:.0f} ms, bursts: {bursts}"
        pings = latency.cell(key)
        pings.note = f"{len(pings.samples):,} pings"
        if lost[key]:
            pings.note += f", {lost[key]} not answered within {cfg.timeout:g} s"
        if bad[key]:
            rate.cell(key).note = f"{bad[key]} error replies"
    for key, cell in latency.cells.items():
        if not cell.samples and lost[key]:
            cell.value = f"no answer within {cfg.timeout:g} s"
    return set_errors([latency, gaps_row, rate], errors)
