"""The example notebooks run headless under nbclient, on the asyncio and trio kernels.

To add a notebook, append a `NotebookCase` to `NOTEBOOKS`: its file name in `notebooks/`, the
kernels to run it on, and for some cells (by cell id) text their output must contain. Every
code cell must finish without an error; nbclient fails the test otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from notebook_run import run_notebook

NOTEBOOK_DIR = Path(__file__).parent.parent / "notebooks"
BOTH_BACKENDS = ("async", "async-trio")


@dataclass(frozen=True)
class NotebookCase:
    """A notebook to execute, on which kernels, and what some of its cells must output."""

    name: str
    """File name in `notebooks/`."""
    kernels: tuple[str, ...] = BOTH_BACKENDS
    """Kernelspec names to run it with (installed by `conftest.py`)."""
    expect: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Cell id → texts that the cell's output (stream or text/plain) must contain."""


NOTEBOOKS = [
    NotebookCase(
        "concurrency.ipynb",
        expect={
            "table-rows": ("shell    execute_request            queue", "complete_request"),
            "get-run-mode": ("execute_request        shell=queue control=task",),
            "this-job": ("in mode queue", "thread: MainThread"),
            "line-thread": ("##thread cell: thread on async_kernel_worker_",),
            "line-enum": ("RunMode.thread cell: thread on async_kernel_worker_",),
            "line-task": ("##task cell: task",),
            "precedence": (
                "'##thread'           -> thread",
                "'RunMode.task'       -> task",
                "'# threading demo'   -> a comment: the default mode",
                "'##threads'          -> a comment: the default mode",
            ),
            "comment-threading-demo": ("an ordinary comment: queue",),
            "comment-threads": ("also just a comment: queue",),
            "blocking-thread-cell": ("in blocking mode: blocking on MainThread",),
            "blocking-off": ("concurrency mode: default",),
            "widget-await": ("clicked: the cell finished",),
            "callers": ("MainThread", "Control"),
        },
    ),
    NotebookCase(
        "caller.ipynb",
        expect={
            "current": ("this cell's caller: MainThread",),
            "start-new": ("started: demo running: True thread: demo",),
            "call-soon": ("call_soon ran on demo", "call_soon(add, 1, 2) = 3"),
            "call-later": ("call_later ran on demo after at least 0.2 s: True",),
            "queue-call": ("queue_call order: [0, 1, 2]",),
            "to-thread": ("to_thread ran on async_kernel_worker_",),
            "pending-result": ("Pending -> result() ran on demo",),
            "pending-cancel": ("cancel() -> True", "cancelled: True"),
            "pending-callback": ("done callback got 42", "await -> 42"),
            "pending-other-thread": ("awaits: main caller ran on MainThread",),
            "callers": ("MainThread", "demo"),
            "stop": ("demo running: False", "protected:"),
        },
    ),
    NotebookCase(
        "output.ipynb",
        expect={
            "thread-while-running": ("printed by a thread while its cell runs",),
            "later-start": ("thread started; it waits for the next cell",),
            "later-release": (
                "printed by the thread started one cell above",
                "its output belongs to the cell that started it: False",
            ),
            "starter-release": ("the thread's output went to the cell that started it: True",),
            "output-to-release": (
                "not pinned: this line goes to the cell that runs now",
                "pinned with output_to: True",
                "pinned with set_thread_parent: True",
            ),
            "pool": ("worker squared 3", "[0, 1, 4, 9]"),
            "to-thread": (
                "anyio.to_thread kept the cell: True",
                "Caller().to_thread: printed on async_kernel_worker_",
                "Caller().to_thread kept the cell: True",
            ),
            "display-thread": ("progress: done (updated by a thread of the next cell)",),
            "display-later": ("updated the display of the cell above",),
            "clear-output": ("frame 2 of 3",),
            "fd": ("hello from os.system", "hello from a subprocess", "hello from os.write"),
        },
    ),
    NotebookCase(
        "subshells.ipynb",
        expect={
            "features": ("supported_features: ['kernel subshells']", "subshell: None"),
            "create": ("created a subshell on thread subshell-", "this one listed: True"),
            "busy": ("while the main shell was blocked: subshell-", "saw 'set in the main shell'"),
            "callers": ("MainThread", "subshell-"),
            "delete": ("still listed after delete: False",),
        },
    ),
    NotebookCase(
        "debugging.ipynb",
        expect={
            "info": ("debugger: True",),
            "client": ("initialize: True", "attach: True", "cells are named with Murmur2"),
            "stop": (
                "breakpoint verified: True",
                "stopped in area line 2",
                "'w': '3'",
                "stopped threads: 1",
                "subshell cell: ok",
                "it printed: area 12",
            ),
            "cleanup": ("disconnect: True", "isStarted: False"),
        },
    ),
]
"""The notebooks to execute; extend this list."""


@pytest.mark.parametrize(
    ("case", "kernel_name"),
    [
        pytest.param(case, kernel, id=f"{Path(case.name).stem}-{kernel}")
        for case in NOTEBOOKS
        for kernel in case.kernels
    ],
)
def test_notebook_runs_headless(case: NotebookCase, kernel_name: str) -> None:
    """Every code cell finishes; the expected cells print what the notebook promises."""
    run_notebook(NOTEBOOK_DIR / case.name, kernel_name, case.expect)


def test_notebooks_have_no_stored_outputs() -> None:
    """The notebooks are committed clean: no outputs, no execution counts."""
    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{path.name} cell {cell.get('id')!r} has outputs"
                assert cell.execution_count is None, path.name


RUN_ELSEWHERE = {
    "gui.ipynb": "tests/gui/test_gui_notebook.py (it needs Xvfb)",
    "clusters.ipynb": "mkdocs build (in .ci/run) executes it: it starts ipyparallel and Dask",
}
"""Notebooks executed by another test, and which."""


def test_every_notebook_is_listed() -> None:
    """A notebook added to `notebooks/` is also executed here (or where `RUN_ELSEWHERE` says)."""
    listed = {case.name for case in NOTEBOOKS} | set(RUN_ELSEWHERE)
    assert {path.name for path in NOTEBOOK_DIR.glob("*.ipynb")} <= listed
