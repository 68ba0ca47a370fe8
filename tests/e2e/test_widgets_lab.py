"""Widgets in JupyterLab with its default settings, where comm messages go over subshells.

JupyterLab 4.4+ sends widget messages on one subshell per comm target by default ("Kernel comms
over subshells"). The kernel must still handle a widget's messages where the widget was made
(the main shell here), or five `%matplotlib widget` figures run together leave some blank;
and a Stop button must still end a main-shell cell that sleeps in a loop, and a cell that awaits
a click must still get it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from lab_ui import TIMEOUT
from playwright.sync_api import expect

if TYPE_CHECKING:
    from lab_ui import Notebook, OpenNotebook
    from playwright.sync_api import Locator

pytestmark = pytest.mark.e2e

FIGURES = 5
RUNS = 5
"""Fresh notebooks (and kernels) that run all their cells at once, per test run."""
SETUP_CELL = "%matplotlib widget\nimport matplotlib.pyplot as plt"
FIGURE_CELL = "fig, ax = plt.subplots(figsize=(3, 2))\nax.plot([0, {i}, 1, {i}], lw=4)"

# Per canvas of the output: how many of its pixels are drawn and not white. A figure whose
# image never arrived is an empty (transparent) canvas.
_DRAWN_PIXELS = """
(area) => [...area.querySelectorAll('.jupyter-matplotlib-canvas-div canvas')].map((c) => {
    if (!c.width || !c.height) return 0;
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let drawn = 0;
    for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3] > 0 && (data[i] < 250 || data[i + 1] < 250 || data[i + 2] < 250)) drawn++;
    }
    return drawn;
})
"""


def rendered(area: Locator) -> bool:
    """Whether the output area shows an ipympl figure whose canvas has the plot drawn."""
    if area.locator(".jupyter-matplotlib-figure").count() == 0:
        return False
    return max(area.evaluate(_DRAWN_PIXELS), default=0) > 100


def wait_rendered(notebook: Notebook, index: int, *, timeout: float = TIMEOUT / 1000) -> bool:
    """Wait (bounded) until cell `index` shows a drawn figure; False if it never does."""
    area = notebook.output(index).area
    deadline = time.monotonic() + timeout
    while not rendered(area):
        if time.monotonic() > deadline:
            return False
        notebook.page.wait_for_timeout(100)  # a poll of the page: nothing signals "drawn"
    return True


def test_run_all_renders_every_ipympl_figure(open_notebook: OpenNotebook) -> None:
    sources = [SETUP_CELL, *(FIGURE_CELL.format(i=i + 2) for i in range(FIGURES))]
    counts = []
    for run in range(RUNS):
        notebook = open_notebook(f"ipympl-run-all-{run}", sources)
        notebook.run_all()
        for index in range(len(sources)):
            notebook.expect_done(index)
        notebook.expect_kernel_status("Idle")
        shown = [wait_rendered(notebook, 1 + i) for i in range(FIGURES)]
        counts.append(sum(shown))
        print(f"run {run + 1}: {sum(shown)}/{FIGURES} figures rendered ({shown})")
    assert counts == [FIGURES] * RUNS, f"figures rendered per run: {counts}"


STOP_SETUP = """\
import time
import ipywidgets as widgets

stop = False
stopped_at = None
button = widgets.Button(description="Stop")


def on_click(_):
    global stop, stopped_at
    stop, stopped_at = True, time.time()


button.on_click(on_click)
display(button)"""
STOP_LOOP = """\
stop = False
print("looping", flush=True)
while not stop:
    time.sleep(0.1)
print(f"ended {time.time():.3f}")"""
STOP_RUNS = 3


def test_stop_button_ends_a_sleeping_main_shell_cell(open_notebook: OpenNotebook) -> None:
    notebook = open_notebook("stop-button", [STOP_SETUP, STOP_LOOP])
    notebook.run(0)
    notebook.expect_done(0)
    button = notebook.output(0).area.get_by_role("button", name="Stop")
    expect(button).to_be_visible()
    latencies = []
    for _ in range(STOP_RUNS):
        notebook.run(1)
        notebook.output(1).expect_contains("looping")
        notebook.expect_running(1)
        clicked = time.time()
        button.click()
        notebook.expect_done(1, timeout=5_000)
        text = notebook.output(1).text()
        ended = float(text.split("ended", 1)[1].split()[0])
        latencies.append(ended - clicked)
    print("Stop-button latencies (s):", [f"{x:.3f}" for x in latencies])
    assert all(x < 0.5 for x in latencies), latencies


AWAIT_CELL = """\
{mode}import anyio
import ipywidgets as widgets
from async_kernel import Caller

caller = Caller()
clicked = anyio.Event()
go = widgets.Button(description="Go")
go.on_click(lambda _: caller.call_direct(clicked.set))
display(go)
with anyio.fail_after(30):
    await clicked.wait()
print("clicked")"""


def test_cell_awaits_a_click(open_notebook: OpenNotebook) -> None:
    """A cell (main shell, then a `##thread` cell) awaits its button's click and finishes."""
    cells = [AWAIT_CELL.format(mode=""), AWAIT_CELL.format(mode="##thread\n")]
    notebook = open_notebook("await-click", cells)
    for index in range(2):
        notebook.run(index)
        button = notebook.output(index).area.get_by_role("button", name="Go")
        expect(button).to_be_visible()
        notebook.expect_running(index)
        button.click()
        notebook.expect_done(index)
        notebook.output(index).expect_contains("clicked")
