"""JupyterLab's debugger on async-kernel, driven through a real browser as a user would.

The notebook toolbar shows the debugger toggle for our kernel (its kernelspec and
`kernel_info_reply` say `debugger: true`); a breakpoint set in the gutter of a `##thread` cell
stops it, the variables panel shows the cell's locals, and Continue lets it finish.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from lab_ui import TIMEOUT
from playwright.sync_api import expect

if TYPE_CHECKING:
    from lab_ui import Notebook, OpenNotebook
    from playwright.sync_api import Locator

pytestmark = pytest.mark.e2e

THREAD_CELL = (
    "##thread\ndef area(w, h):\n    inside = w * h\n    return inside\nprint('area', area(6, 7))"
)
BREAK_LINE = 3


def bug_button(notebook: Notebook) -> Locator:
    """The notebook toolbar's debugger toggle (JupyterLab's `jp-DebuggerBugButton`)."""
    return notebook.panel.locator(".jp-DebuggerBugButton button, button.jp-DebuggerBugButton")


def set_gutter_breakpoint(notebook: Notebook, index: int, line: int) -> None:
    """Click the breakpoint gutter of cell `index` beside its line `line`."""
    cell = notebook.cell(index)
    number = cell.locator(".cm-lineNumbers .cm-gutterElement", has_text=re.compile(rf"^{line}$"))
    expect(number).to_be_visible(timeout=TIMEOUT)
    row = number.bounding_box()
    gutter = cell.locator(".cm-gutter.cm-breakpoint-gutter").bounding_box()
    assert row is not None
    assert gutter is not None
    notebook.page.mouse.click(gutter["x"] + gutter["width"] / 2, row["y"] + row["height"] / 2)
    expect(cell.locator(".cm-breakpoint-icon")).to_have_count(1, timeout=TIMEOUT)


def test_gutter_breakpoint_stops_a_thread_cell(open_notebook: OpenNotebook) -> None:
    notebook = open_notebook("debugger", [THREAD_CELL])
    page = notebook.page

    toggle = bug_button(notebook)
    expect(toggle).to_be_enabled(timeout=TIMEOUT)  # the kernel supports debugging
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true", timeout=TIMEOUT)
    sidebar = page.locator(".jp-DebuggerSidebar")
    expect(sidebar).to_be_visible(timeout=TIMEOUT)

    set_gutter_breakpoint(notebook, 0, BREAK_LINE)
    expect(sidebar.locator(".jp-DebuggerBreakpoint")).to_have_count(1, timeout=TIMEOUT)

    notebook.run(0)
    frame = sidebar.locator(".jp-DebuggerCallstackFrame").first
    expect(frame).to_contain_text("area", timeout=TIMEOUT)
    # The panel keeps the scope it showed before the stop (Globals): pick the frame's locals.
    sidebar.get_by_label("Scope").select_option("Locals")
    variables = sidebar.locator(".jp-DebuggerVariables-body:not(.lm-mod-hidden)")
    for name, value in (("w", "6"), ("h", "7")):
        label = variables.locator(".jp-DebuggerVariables-name", has_text=re.compile(rf"^{name}"))
        expect(label).to_be_visible(timeout=TIMEOUT)
        expect(label.locator("xpath=..")).to_contain_text(value)
    notebook.expect_running(0)
    notebook.expect_kernel_status("Busy")  # debug requests do not make it look idle

    sidebar.locator('[data-command="debugger:continue"]').first.click()
    notebook.expect_done(0)
    notebook.output(0).expect_contains("area 42")
    notebook.expect_kernel_status("Idle")
