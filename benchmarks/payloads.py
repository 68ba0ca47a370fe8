"""Large messages: a comm echoing a 50 MB binary buffer, and a 5 MB PNG `display_data`.

A setup cell registers the comm target `bench_echo_buffers` with the `comm` package (the same
code on every kernel); the target sends every message's buffers straight back with
`comm.send`. The client times `comm_msg` with one buffer → the echoed `comm_msg` on iopub and
checks that the bytes came back unchanged. For the image a setup cell builds a valid PNG of
random pixels (deterministic, so the client can check what arrives); the timed cell shows it
with `IPython.display.display(Image(data=...))`.
"""

from __future__ import annotations

import base64
import random
import sys
import uuid
from typing import Any

from kernels import BenchError, KernelHandle
from measures import Config, interleave, mark_na, set_errors
from report import Row

__all__ = ("TARGET", "big_comm", "png_display")

TARGET = "bench_echo_buffers"
COMM_SETUP = f"""
import comm as _bench_comm

def _bench_buffers_target(c, _open_msg):
    c.on_msg(lambda msg: c.send(msg["content"]["data"], buffers=msg["buffers"]))

_bench_comm.get_comm_manager().register_target({TARGET!r}, _bench_buffers_target)
"""
MAKE_PNG = """
def _bench_make_png(size):
    import random, struct, zlib

    width = 1000
    height = max(1, size // (3 * width + 1))
    rng = random.Random(0)
    raw = b"".join(b"\\0" + rng.randbytes(3 * width) for _ in range(height))

    def chunk(tag, data):
        crc = struct.pack(">I", zlib.crc32(tag + data))
        return struct.pack(">I", len(data)) + tag + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(raw, 1)
    signature = b"\\x89PNG\\r\\n\\x1a\\n"
    return signature + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
"""
PNG_SETUP = MAKE_PNG + "_bench_png = _bench_make_png({size})\ndel _bench_make_png\n"
PNG_CELL = "from IPython.display import Image, display\ndisplay(Image(data=_bench_png))\n"
BIG_TIMEOUT = 60.0
"""Limit for one large echo or display (seconds)."""


def _expected_png(size: int) -> bytes:
    """The PNG the setup cell builds, made here with the same code."""
    namespace: dict[str, Any] = {}
    exec(MAKE_PNG, namespace)
    return namespace["_bench_make_png"](size)


def big_comm(handles: dict[str, KernelHandle], cfg: Config) -> list[Row]:
    """Round trip of a comm message carrying `big_comm_bytes` each way, and its MB/s."""
    mb = cfg.big_comm_bytes / 1e6
    rtt = Row("comm_big_rtt", f"comm echo of a {mb:g} MB buffer: round trip", "s", digits=3)
    rate = Row(
        "comm_big_rate",
        f"comm echo of a {mb:g} MB buffer: 2 x {mb:g} MB / round trip",
        "MB/s",
        scale=1e-6,
        digits=0,
        higher_is_better=True,
    )
    rows = [rtt, rate]
    mark_na(rows, handles)
    measured = {k: h for k, h in handles.items() if not h.kdef.protocol_only}
    payload = random.Random(1).randbytes(cfg.big_comm_bytes)
    comms: dict[str, str] = {}

    def open_step(h: KernelHandle) -> None:
        h.run_code(COMM_SETUP, cfg.timeout)
        comm_id = uuid.uuid4().hex
        h.send("shell", "comm_open", {"comm_id": comm_id, "target_name": TARGET, "data": {}})
        comms[h.kdef.key] = comm_id
        _echo(h, comm_id, b"ready", cfg.timeout)

    def step(h: KernelHandle) -> None:
        seconds = _echo(h, comms[h.kdef.key], payload, BIG_TIMEOUT)
        rtt.cell(h.kdef.key).samples.append(seconds)
        rate.cell(h.kdef.key).samples.append(2 * len(payload) / seconds)

    errors = interleave(measured, 1, open_step)
    live = {k: h for k, h in measured.items() if k not in errors}
    errors |= interleave(live, cfg.big_comm_rounds, step)
    for key, comm_id in comms.items():
        try:
            handles[key].send("shell", "comm_close", {"comm_id": comm_id, "data": {}})
            handles[key].drain()
        except Exception as exc:
            handles[key].broken = True
            print(f"[{key}] closing the buffer comm failed: {exc!r}", file=sys.stderr)
    return set_errors(rows, errors)


def _echo(h: KernelHandle, comm_id: str, payload: bytes, timeout: float) -> float:
    """Send `payload` as the buffer of a comm_msg; return seconds until the echo arrived."""
    seq = uuid.uuid4().hex
    content = {"comm_id": comm_id, "data": {"seq": seq}}
    _, t0 = h.send("shell", "comm_msg", content, watch=False, buffers=[payload])

    def echoed(channel: str, msg: dict[str, Any]) -> bool:
        c = msg["content"]
        return (
            channel == "iopub"
            and msg["msg_type"] == "comm_msg"
            and c.get("comm_id") == comm_id
            and c.get("data", {}).get("seq") == seq
        )

    t, msg = h.wait(echoed, timeout)
    buffers = msg.get("buffers", [])
    if len(buffers) != 1 or bytes(buffers[0]) != payload:
        sizes = [len(b) for b in buffers]
        raise BenchError(f"the echo's buffers differ (sizes {sizes}, sent {len(payload):,})")
    return t - t0


def png_display(handles: dict[str, KernelHandle], cfg: Config) -> list[Row]:
    """A cell displaying a PNG of `png_bytes`: time to its display_data and to idle."""
    expected = _expected_png(cfg.png_bytes)
    mb = len(expected) / 1e6
    shown = Row("png_display", f"{mb:.1f} MB PNG: send → display_data", "ms", scale=1e3, digits=0)
    idle = Row("png_idle", f"{mb:.1f} MB PNG: send → idle", "ms", scale=1e3, digits=0)
    rows = [shown, idle]
    mark_na(rows, handles)
    measured = {k: h for k, h in handles.items() if not h.kdef.protocol_only}
    checked: set[str] = set()

    def setup_step(h: KernelHandle) -> None:
        h.run_code(PNG_SETUP.format(size=cfg.png_bytes), cfg.timeout)

    def step(h: KernelHandle) -> None:
        key = h.kdef.key
        content = {"code": PNG_CELL, "silent": False, "store_history": False}
        msg_id, t0 = h.send("shell", "execute_request", content)

        def shows(channel: str, msg: dict[str, Any]) -> bool:
            return (
                channel == "iopub"
                and msg["parent_header"].get("msg_id") == msg_id
                and msg["msg_type"] in ("display_data", "error", "status")
                and msg["content"].get("execution_state") != "busy"
            )

        t_shown, msg = h.wait(shows, BIG_TIMEOUT)
        reply, _, t_idle = h.await_reply(msg_id, BIG_TIMEOUT, idle=True)
        if reply["content"]["status"] != "ok":
            c = reply["content"]
            raise BenchError(f"display cell failed: {c.get('ename')}: {c.get('evalue')}")
        if msg["msg_type"] != "display_data":
            raise BenchError(f"{msg['msg_type']} before any display_data")
        assert t_idle is not None
        if key not in checked:
            data = msg["content"]["data"].get("image/png", "")
            if base64.b64decode(data) != expected:
                raise BenchError("the displayed image/png differs from the PNG made")
            checked.add(key)
        shown.cell(key).samples.append(t_shown - t0)
        idle.cell(key).samples.append(t_idle - t0)

    errors = interleave(measured, 1, setup_step)
    live = {k: h for k, h in measured.items() if k not in errors}
    errors |= interleave(live, cfg.png_rounds, step)
    return set_errors(rows, errors)
