"""async-kernel in JupyterLab, driven through a real browser as a user would drive it.

Each test saves a notebook into the server's root through the REST API, opens it in a fresh
page, runs its cells with Shift+Enter and reads the result from the page. The fixtures (one
JupyterLab server and one headless Chromium for the module) are in `conftest.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from lab_ui import Notebook, OpenNotebook

pytestmark = pytest.mark.e2e

# A main-shell cell that announces it is blocking, so a test knows it has started. It runs far
# longer than any test; the tests interrupt it.
BUSY_CELL = "import time\nprint('blocking the main shell', flush=True)\ntime.sleep(120)"


def start_busy_cell(notebook: Notebook, index: int) -> None:
    """Run the BUSY_CELL at `index` and wait until the kernel is inside its sleep."""
    notebook.run(index)
    notebook.output(index).expect_contains("blocking the main shell")
    notebook.expect_running(index)


def interrupt_busy_cell(notebook: Notebook, index: int) -> None:
    """Interrupt the kernel from the toolbar; the busy cell must end with KeyboardInterrupt."""
    notebook.interrupt()
    notebook.output(index).expect_contains("KeyboardInterrupt")
    notebook.expect_done(index)
    notebook.expect_kernel_status("Idle")


def test_notebook_runs_cells(open_notebook: OpenNotebook) -> None:
    notebook = open_notebook("basics", ["print('hello')", "1+1"])

    notebook.run(0)
    notebook.expect_done(0)
    notebook.output(0).expect_text("hello")

    notebook.run(1)
    notebook.expect_done(1)
    notebook.output(1).expect_result("2")
    notebook.expect_kernel_status("Idle")


def test_thread_cell_finishes_while_main_shell_is_busy(open_notebook: OpenNotebook) -> None:
    thread_cell = "##thread\nimport threading\nprint('ran on', threading.current_thread().name)"
    notebook = open_notebook("thread-cell", [BUSY_CELL, thread_cell])

    start_busy_cell(notebook, 0)
    notebook.run(1)
    notebook.expect_done(1)
    notebook.output(1).expect_contains("ran on async_kernel_worker")
    notebook.expect_running(0)

    interrupt_busy_cell(notebook, 0)


def test_subshell_console_runs_while_main_shell_is_busy(open_notebook: OpenNotebook) -> None:
    notebook = open_notebook("subshell-console", [BUSY_CELL])
    console = notebook.open_subshell_console()
    console.wait_for_subshell()

    start_busy_cell(notebook, 0)
    output = console.run("print('from the subshell:', 6 * 7)")
    output.expect_contains("from the subshell: 42")
    notebook.expect_running(0)

    interrupt_busy_cell(notebook, 0)
