"""`notebooks/gui.ipynb` runs headless, as the docs build runs it, on asyncio and trio.

The kernel gets no `DISPLAY`: the notebook's first cell starts its own Xvfb (and Qt draws
offscreen), as it does when the site is built.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import KERNELS, need
from notebook_run import run_notebook

pytestmark = pytest.mark.timeout(180)

NOTEBOOK = Path(__file__).parent.parent.parent / "notebooks" / "gui.ipynb"

EXPECT = {
    "headless": ("display: :",),
    "mpl-tk": ("event loop: tk",),
    "mpl-drawn": ("drawn while the cell awaited: True", "window on screen: True"),
    "thread": (
        "MainThreadRequired: A new figure window needs the main thread",
        "redrawn by the main thread: True",
    ),
    "tk-off": ("event loop: None",),
    "qt-on": ("event loop: qt",),
    "qt-await": ("the timer ticked while the cell awaited: True",),
    "qt-off": ("event loop: None",),
}


@pytest.mark.parametrize("kernel_name", KERNELS)
def test_gui_notebook_runs_headless(kernel_name: str) -> None:
    need("xvfb", "tk", "qt")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "QT_QPA_PLATFORM")}
    cells = run_notebook(NOTEBOOK, kernel_name, EXPECT, env=env)
    images = [
        o for cell_id in ("mpl-drawn", "qt-await") for o in cells[cell_id].outputs if "data" in o
    ]
    assert all("image/png" in o["data"] for o in images)
    assert len(images) == 2
