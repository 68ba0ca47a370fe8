"""Benchmark async-kernel against ipykernel and a minimal pyzmq floor kernel.

Usage:
    python benchmarks/run.py --quick                      # < 3 minutes on 2 cores
    python benchmarks/run.py                              # full sample counts
    python benchmarks/run.py --kernels ipykernel,floor --only kernel_info,execute

Prints a markdown table on stdout (progress goes to stderr) and writes the same results, with
raw samples, to `benchmarks/results/<date>-<mode>.json`.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import zmq
from echo import comm_echo
from gui import gui_loop
from kernels import BOUNDS, KernelDef, KernelHandle, kernel_defs, write_kernelspecs
from load import control_under_load
from measures import (
    Config,
    describe,
    execute_pipelined,
    execute_sequential,
    kernel_info,
    memory,
    startup,
    stdout,
)
from modes import subshell_execute, thread_cells
from payloads import big_comm, png_display
from report import Row, render_markdown, write_json
from resources import idle_cpu, memory_growth

__all__ = ("MEASURES", "compile_bytecode", "main")

HERE = Path(__file__).resolve().parent
Measure = Callable[[dict[str, KernelHandle], Config], list[Row]]
#: Measurements on long-lived kernels, in run order; `rss` first, while the kernels are fresh.
MEASURES: dict[str, Measure] = {
    "rss": memory,
    "kernel_info": kernel_info,
    "execute": execute_sequential,
    "pipelined": execute_pipelined,
    "comm": comm_echo,
    "stdout": stdout,
    "control": control_under_load,
    "thread": thread_cells,
    "subshell": subshell_execute,
    "comm_big": big_comm,
    "display": png_display,
    "growth": memory_growth,
    "idle": idle_cpu,
    "gui": gui_loop,  # last: a Qt application stays in each kernel
}
ALL = ("startup", *MEASURES)


def _log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _machine() -> dict[str, Any]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
    }


def _versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for dist in ("async-kernel", "ipykernel", "jupyter_client", "pyzmq", "comm", "orjson"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["libzmq"] = zmq.zmq_version()
    try:
        commit = subprocess.run(
            ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        out["async-kernel"] += f" ({commit})"
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _start(handle: KernelHandle, cfg: Config) -> str:
    """Start `handle`; return an error text, or "" on success."""
    try:
        handle.start(cfg.start_timeout)
    except Exception as exc:
        handle.close()
        return f"did not start: {describe(exc)}"
    return ""


def run(defs: dict[str, KernelDef], only: list[str], cfg: Config, root: Path) -> list[Row]:
    """Run the selected measurements; kernels are always shut down before this returns."""
    log_dir = root / "logs"
    log_dir.mkdir()
    rows: list[Row] = []
    if "startup" in only:
        _log(f"startup: {cfg.startups} fresh kernels each")
        rows += startup(defs, log_dir, cfg)
    names = [name for name in MEASURES if name in only]
    if not names:
        return rows
    handles: dict[str, KernelHandle] = {}
    dead: dict[str, str] = {}
    try:
        for key, kdef in defs.items():
            handles[key] = KernelHandle(kdef, log_dir)
            if error := _start(handles[key], cfg):
                dead[key] = error
                _log(f"{key}: {error}")
        for name in names:
            for key, handle in list(handles.items()):
                if handle.broken and key not in dead:
                    _log(f"{key}: restarting after an error")
                    handle.close()
                    handles[key] = KernelHandle(defs[key], log_dir)
                    if error := _start(handles[key], cfg):
                        dead[key] = error
            _log(name)
            live = {k: h for k, h in handles.items() if k not in dead}
            new_rows = MEASURES[name](live, cfg)
            for row in new_rows:
                for key, error in dead.items():
                    row.cell(key).error = error
            rows += new_rows
    finally:
        for handle in handles.values():
            handle.close()
    return rows


def compile_bytecode() -> None:
    """Write the `.pyc` files of async-kernel's package, as installing a wheel does.

    An editable install has none until a first import writes them, and none at all where
    `PYTHONDONTWRITEBYTECODE` is set; then every kernel compiles the package anew (some 40 ms of
    start-up here) while ipykernel's installed files are compiled already.
    """
    import async_kernel

    compileall.compile_dir(Path(async_kernel.__file__).parent, quiet=1)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the benchmarks, print the table and write the JSON."""
    defs = kernel_defs()
    parser = argparse.ArgumentParser(description="Benchmark async-kernel against ipykernel.")
    parser.add_argument("--quick", action="store_true", help="fewer samples (< 3 min)")
    parser.add_argument(
        "--kernels",
        default=",".join(k for k in defs if k not in BOUNDS),
        help=f"comma list of {', '.join(defs)}",
    )
    parser.add_argument("--only", default=",".join(ALL), help=f"comma list of {', '.join(ALL)}")
    parser.add_argument("--output", type=Path, help="JSON path (default: benchmarks/results/)")
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.kernels.split(",") if k.strip()]
    only = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = [k for k in keys if k not in defs] + [m for m in only if m not in ALL]
    if unknown or not keys:
        parser.error(f"unknown or missing names: {unknown or '--kernels'}")
    selected = {k: defs[k] for k in defs if k in keys}
    cfg = Config.make(quick=args.quick)
    compile_bytecode()
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": cfg.quick,
        "kernels": list(selected),
        "measures": only,
        "machine": _machine(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "versions": _versions(),
        "config": dataclasses.asdict(cfg),
    }
    with tempfile.TemporaryDirectory(prefix="async-kernel-bench-") as tmp:
        root = Path(tmp)
        write_kernelspecs(root / "data", list(selected.values()))
        os.environ["JUPYTER_PATH"] = str(root / "data")
        os.environ["JUPYTER_RUNTIME_DIR"] = str(root / "runtime")
        os.environ["IPYTHONDIR"] = str(root / "ipython")  # no history or profile of the user's
        rows = run(selected, only, cfg, root)
    meta["seconds"] = round(time.perf_counter() - started, 1)
    meta["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(render_markdown(rows, {k: d.label for k, d in selected.items()}, meta))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.output or HERE / "results" / f"{stamp}-{'quick' if cfg.quick else 'full'}.json"
    write_json(path, rows, meta)
    _log(f"done in {meta['seconds']} s; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
