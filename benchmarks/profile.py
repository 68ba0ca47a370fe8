"""Where the CPU of one sequential execute goes, thread by thread, in async-kernel (or another).

Usage:
    python benchmarks/profile.py                  # async-kernel, 3,000 executes of "pass"
    python benchmarks/profile.py --kernel floor --executes 5000
    python benchmarks/profile.py --workload comm_echo

The kernel runs one of the benchmark's sequential workloads, one request at a time: `pass`
(`execute_request "pass"` until reply and idle, as the `execute` row does), `kernel_info` (on
shell, until reply and idle), `comm_echo` (a `comm_msg` until its echo, as the idle comm echo
row) or `print` (a cell of 1,000 `print(i)`, as the stdout row's cell in small). Each thread's
CPU comes from `/proc/<pid>/task/*/schedstat`
over the measured executes; where it goes comes from py-spy (`pip install py-spy`, in the
`bench` extra) sampling the same executes: only samples of a thread holding the GIL, so Python
code. Each Python frame is put in one of the `CATEGORIES` (the innermost match wins); a
thread's CPU that no Python frame accounts for is time in system calls and libraries run
without the GIL (libzmq, `poll`, `write`), shown as "outside Python". Prints a markdown table
of microseconds per request (per cell of 1,000 prints for `print`).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from echo import Echo
from kernels import BenchError, KernelHandle, kernel_defs, write_kernelspecs
from measures import PASS, Config, print_code

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("CATEGORIES", "WORKLOADS", "main")

WORKLOADS = ("pass", "kernel_info", "comm_echo", "print")
"""What `--workload` can repeat; see the module's text."""

PRINT_CELL = {
    "code": print_code(1000),
    "silent": False,
    "store_history": False,
}

CATEGORIES: tuple[tuple[str, str], ...] = (
    # (label, regular expression on "function (file)"); the innermost frame that matches wins.
    ("history (IPython's sqlite history)", r"IPython/core/history\.py"),
    ("IPython: transform the cell", r"inputtransformer2|transform_cell|prefilter|tokeni"),
    ("IPython: compile", r"compilerop\.py|codeop\.py|_cellnames\.py"),
    ("IPython: events, display trap, displayhook", r"_inline\.py|displayhook|displaytrap"),
    ("IPython: run_cell (the rest)", r"IPython/|traitlets/"),
    ("wire: sign, encode, decode", r"wire/_session\.py|wire/_json\.py|hmac\.py|wire/_replay"),
    ("wire: socket send and receive", r"zmq/|wire/_sockets\.py"),
    ("request: dispatch, run mode, content checks", r"requests/_dispatcher|requests/_content"),
    ("request: busy, reply, idle, handler", r"requests/_runner|requests/_handlers|wire/_outbox"),
    ("output: flush streams and fd capture", r"output/"),
    ("callers: scheduling onto a thread's loop", r"callers/"),
    ("event loop (asyncio/anyio/trio)", r"asyncio/|anyio/|trio/|selectors\.py|_gui_loops"),
)
"""The categories of the table; a frame in none of them counts as "other"."""

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")
_THREAD = re.compile(r"^thread \((?P<tid>\d+)\): (?P<name>.*)$")


def _thread_cpu(pid: int) -> dict[str, int]:
    """Nanoseconds on a CPU of each live thread of `pid`, by thread id."""
    out: dict[str, int] = {}
    for path in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            out[path.parent.name] = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


def _category(frames: list[str]) -> str:
    for frame in reversed(frames):
        match = _FRAME.match(frame)
        where = f"{match['func']} ({match['file']})" if match else frame
        for label, pattern in CATEGORIES:
            if re.search(pattern, where):
                return label
    return "other"


def _samples(path: Path) -> dict[str, tuple[str, collections.Counter[str]]]:
    """py-spy's raw output: per thread id, its name and its samples per category."""
    threads: dict[str, tuple[str, collections.Counter[str]]] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        head, *frames = stack.split(";")
        match = _THREAD.match(head)
        if match is None or not count.isdigit():
            continue
        _, counter = threads.setdefault(match["tid"], (match["name"], collections.Counter()))
        counter[_category(frames)] += int(count)
    return threads


def workload(handle: KernelHandle, name: str, cfg: Config) -> Callable[[], object]:
    """One request of the workload `name` on `handle`, waited for (set up first if need be)."""
    if name == "pass":
        return lambda: handle.request("shell", "execute_request", PASS, timeout=cfg.timeout)
    if name == "kernel_info":
        return lambda: handle.request("shell", "kernel_info_request", timeout=cfg.timeout)
    if name == "comm_echo":
        echo = Echo(handle, cfg)
        return lambda: echo.round_trip(cfg.timeout)
    if name == "print":
        return lambda: handle.request("shell", "execute_request", PRINT_CELL, timeout=cfg.timeout)
    raise BenchError(f"no workload {name!r}: one of {', '.join(WORKLOADS)}")


def profile(handle: KernelHandle, executes: int, rate: int, cfg: Config, name: str = "pass") -> str:
    """Run `executes` requests of the workload `name` under py-spy; return the markdown table."""
    pid = handle.pid
    if pid is None:
        raise BenchError("the provisioner reports no pid")
    # The venv's bin directory need not be on PATH: look beside this interpreter first.
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise BenchError("py-spy is not installed: pip install py-spy")
    step = workload(handle, name, cfg)
    for _ in range(300):  # warm-up: caches, history, the allocator
        step()
    out = Path(tempfile.mkdtemp(prefix="async-kernel-profile-")) / "samples.txt"
    argv = [spy, "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "--threads"]
    argv += ["--gil", "--nonblocking", "-o", str(out)]
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches (no request is measured meanwhile)
    before = _thread_cpu(pid)
    started = time.perf_counter()
    for _ in range(executes):
        step()
    wall = time.perf_counter() - started
    after = _thread_cpu(pid)
    recorder.send_signal(2)  # py-spy writes its samples on SIGINT
    _, err = recorder.communicate(timeout=60)
    if not out.exists():
        raise BenchError(f"py-spy wrote no samples: {err.decode(errors='replace')[-300:]}")
    threads = _samples(out)
    lines = [
        f"{executes} sequential requests of the `{name}` workload at {executes / wall:,.0f}/s; "
        f"py-spy at {rate} Hz on the GIL holder; microseconds of CPU per request",
        "",
        "| thread | where | µs per request |",
        "|---|---|---|",
    ]
    total = 0.0
    for tid, ns in sorted(after.items(), key=lambda kv: before.get(kv[0], 0) - kv[1]):
        cpu = (ns - before.get(tid, 0)) / 1e3 / executes
        if cpu < 1.0:
            continue
        total += cpu
        name, counter = threads.get(
            tid, (f"thread {tid} (no Python frames)", collections.Counter())
        )
        in_python = sum(counter.values()) / rate * 1e6 / executes
        scale = min(1.0, cpu / in_python) if in_python else 0.0  # samples can overshoot a bit
        lines.append(f"| **{name}** | all | **{cpu:.0f}** |")
        for label, samples in counter.most_common():
            share = samples / rate * 1e6 / executes * scale
            if share >= 1.0:
                lines.append(f"| | {label} | {share:.0f} |")
        if cpu > in_python * scale + 1.0:
            lines.append(
                f"| | outside Python (system calls, libzmq) | {cpu - in_python * scale:.0f} |"
            )
    lines.append(f"| **all threads** | | **{total:.0f}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Start the kernel, profile it, print the table."""
    defs = kernel_defs()
    parser = argparse.ArgumentParser(description="Profile sequential executes of one kernel.")
    parser.add_argument("--kernel", default="async", choices=list(defs))
    parser.add_argument("--executes", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=997, help="py-spy samples per second")
    parser.add_argument("--workload", default="pass", choices=WORKLOADS)
    args = parser.parse_args(argv)
    cfg = Config.make(quick=False)
    with tempfile.TemporaryDirectory(prefix="async-kernel-profile-") as tmp:
        root = Path(tmp)
        write_kernelspecs(root / "data", [defs[args.kernel]])
        os.environ["JUPYTER_PATH"] = str(root / "data")
        os.environ["JUPYTER_RUNTIME_DIR"] = str(root / "runtime")
        os.environ["IPYTHONDIR"] = str(root / "ipython")
        (root / "logs").mkdir()
        handle = KernelHandle(defs[args.kernel], root / "logs")
        try:
            handle.start(cfg.start_timeout)
            print(profile(handle, args.executes, args.rate, cfg, args.workload))
        finally:
            handle.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
