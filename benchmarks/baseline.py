"""What every IPython kernel pays before it answers anything: start-up time and memory.

Usage:
    python benchmarks/baseline.py              # 10 processes of each kind

Starts plain Python processes, one at a time, and times each from `Popen` until it prints:
`python` alone; `python` that imports what the floor of `run.py` imports (pyzmq, and hmac with
OpenSSL's libcrypto); that and an IPython `InteractiveShell` (its history in a temporary
IPython directory, as a kernel's); and that and asyncio (which loads OpenSSL's libssl). Each
process then reports its `VmRSS`. A kind minus the second is what IPython (and asyncio) add
to any kernel built on them, async-kernel and ipykernel alike: added to the floor's start-up
and RSS in the same run, a bound below which such a kernel cannot get. Prints a markdown table
of medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

__all__ = ("KINDS", "main", "measure")

_REPORT = "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0], flush=True)"

KINDS: dict[str, str] = {
    "python": "",
    "python + pyzmq + hmac (what the floor imports)": "import zmq, hmac, hashlib",
    "... + IPython's InteractiveShell": (
        "import zmq, hmac, hashlib\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.instance()"
    ),
    "... + IPython's InteractiveShell + asyncio": (
        "import zmq, hmac, hashlib, asyncio\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.instance()"
    ),
}
"""The processes measured: a label and the code that runs before the report."""


def measure(code: str, env: dict[str, str]) -> tuple[float, float]:
    """Seconds from `Popen` until the process reported, and its RSS in MiB."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", f"{code}\n{_REPORT}"],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    killer = threading.Timer(30, proc.kill)  # a process that never reports ends the wait
    killer.start()
    try:
        line = proc.stdout.readline()
    finally:
        killer.cancel()
    elapsed = time.perf_counter() - t0
    if not line:
        raise RuntimeError(f"the process reported nothing within 30 s: {code!r}")
    proc.wait(30)
    return elapsed, int(line) / 1024


def main(argv: list[str] | None = None) -> int:
    """Measure each kind `--runs` times, interleaved; print the medians."""
    parser = argparse.ArgumentParser(description="Start-up and RSS of what a kernel builds on.")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory(prefix="async-kernel-baseline-") as tmp:
        env = {**os.environ, "IPYTHONDIR": tmp}
        for code in KINDS.values():
            measure(code, env)  # the first run fills the OS's caches (and IPython's directory)
        for _ in range(args.runs):
            for kind, code in KINDS.items():
                results[kind].append(measure(code, env))
    print(f"{args.runs} processes of each kind, medians\n")
    print("| process | start → report (s) | RSS (MiB) |")
    print("|---|---|---|")
    for kind, samples in results.items():
        wall = statistics.median(s[0] for s in samples)
        rss = statistics.median(s[1] for s in samples)
        print(f"| {kind} | {wall:.3f} | {rss:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
