"""What a user does in JupyterLab, as Playwright steps: open a notebook, run cells, interrupt,
open a subshell console and run code in it.

Every step waits for a DOM state (a prompt, an output, a status text) with a bounded timeout;
nothing is ordered with sleeps. Selectors are JupyterLab 4's CSS classes and command ids.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Protocol

from lab_server import KERNEL_DISPLAY_NAME
from playwright.sync_api import expect

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lab_server import LabServer
    from playwright.sync_api import Locator, Page

__all__ = ("KERNEL_START_TIMEOUT", "SUBSHELL_CONSOLE_MENU_ITEM", "TIMEOUT", "Console", "Notebook")

KERNEL_START_TIMEOUT = 60_000
"""Milliseconds for JupyterLab to load and the kernel to start and report idle."""
TIMEOUT = 30_000
"""Milliseconds any other single wait may take."""

SUBSHELL_CONSOLE_MENU_ITEM = "New Subshell Console for Notebook"
"""The label of JupyterLab's command `notebook:create-subshell-console` (4.4+)."""

_DONE_PROMPT = re.compile(r"^\[\d+\]:$")
_RUN_PROMPT = re.compile(r"^\[(\*|\d+)\]:$")
_MAIN_THREAD_PROBE = (
    "import threading\nprint('main thread:', threading.current_thread() is threading.main_thread())"
)


class OpenNotebook(Protocol):
    """Saves a notebook of code cells on the server and opens it (the `open_notebook` fixture)."""

    def __call__(self, name: str, sources: Sequence[str]) -> Notebook:
        """Save `<name>.ipynb` with one code cell per source, open it, wait for an idle kernel."""
        ...


class Output:
    """The output area of one cell (in a notebook or a console)."""

    def __init__(self, area: Locator) -> None:
        """Wrap the output area `area`."""
        self.area = area

    def expect_text(self, text: str, *, timeout: float = TIMEOUT) -> None:
        """Wait until the whole output reads `text` (whitespace normalized)."""
        expect(self.area).to_have_text(text, timeout=timeout)

    def expect_contains(self, text: str, *, timeout: float = TIMEOUT) -> None:
        """Wait until the output contains `text`."""
        expect(self.area).to_contain_text(text, timeout=timeout)

    def expect_result(self, text: str, *, timeout: float = TIMEOUT) -> None:
        """Wait until the cell's result (its `text/plain` execute_result) reads `text`."""
        expect(self.area.locator('[data-mime-type="text/plain"]')).to_have_text(
            text, timeout=timeout
        )

    def text(self) -> str:
        """The output's text as it is now."""
        return self.area.inner_text()


class Notebook:
    """An open notebook in the page: its cells, kernel status and toolbar."""

    def __init__(self, page: Page, path: str) -> None:
        """Wrap the notebook `path` already open in `page`."""
        self.page = page
        self.path = path
        self.panel = page.locator(".jp-NotebookPanel")

    @classmethod
    def open(cls, page: Page, server: LabServer, path: str) -> Notebook:
        """Load JupyterLab on `path` and wait until its kernel is idle.

        Each notebook gets a workspace of its own, so no earlier test's tabs are restored.
        """
        workspace = re.sub(r"\W", "-", path)
        page.goto(f"{server.url}/lab/workspaces/{workspace}/tree/{path}?token={server.token}")
        notebook = cls(page, path)
        notebook.expect_kernel_status("Idle", timeout=KERNEL_START_TIMEOUT)
        return notebook

    # --- kernel ----------------------------------------------------------------------------

    def kernel_status(self) -> Locator:
        """The status bar item that shows the kernel's name and status, e.g. `... | Idle`."""
        return self.page.locator(".jp-StatusBar-TextItem", has_text=f"{KERNEL_DISPLAY_NAME} |")

    def expect_kernel_status(self, status: str, *, timeout: float = TIMEOUT) -> None:
        """Wait until the status bar shows the kernel in `status` (`Idle`, `Busy`, ...)."""
        expect(self.kernel_status()).to_have_text(
            re.compile(rf"\| {re.escape(status)}$"), timeout=timeout
        )

    def interrupt(self) -> None:
        """Click the notebook toolbar's interrupt button (the square)."""
        self.panel.locator('[data-command="notebook:interrupt-kernel"]').click()

    # --- cells -----------------------------------------------------------------------------

    def cell(self, index: int) -> Locator:
        """The cell at `index` (0-based)."""
        return self.panel.locator(".jp-Notebook .jp-Cell").nth(index)

    def prompt(self, index: int) -> Locator:
        """The input prompt of cell `index`: `[ ]:`, `[*]:` while it runs, `[n]:` when done."""
        return self.cell(index).locator(".jp-InputArea-prompt")

    def output(self, index: int) -> Output:
        """The output area of cell `index`."""
        return Output(self.cell(index).locator(".jp-OutputArea"))

    def run(self, index: int) -> None:
        """Put the cursor into cell `index` and press Shift+Enter, as a user runs a cell.

        Returns once JupyterLab sent the cell (its prompt shows `[*]:` or a number).
        """
        self.cell(index).locator(".jp-InputArea-editor").click()
        self.page.keyboard.press("Shift+Enter")
        expect(self.prompt(index)).to_have_text(_RUN_PROMPT, timeout=TIMEOUT)

    def expect_running(self, index: int) -> None:
        """Check that cell `index` is still running."""
        expect(self.prompt(index)).to_have_text("[*]:", timeout=TIMEOUT)

    def expect_done(self, index: int, *, timeout: float = TIMEOUT) -> None:
        """Wait until cell `index` has finished (its prompt shows an execution count)."""
        expect(self.prompt(index)).to_have_text(_DONE_PROMPT, timeout=timeout)

    def run_all(self) -> None:
        """Run every cell, from the main menu's Run > Run All Cells (`notebook:run-all-cells`)."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

    # --- consoles --------------------------------------------------------------------------

    def open_subshell_console(self) -> Console:
        """Open a console on a new subshell of this notebook's kernel, from the context menu.

        The menu item is JupyterLab's `notebook:create-subshell-console`; JupyterLab only shows
        it when the kernel announces `kernel subshells` in its `kernel_info_reply`.
        """
        self.cell(0).click(button="right")
        self.page.get_by_role("menuitem", name=SUBSHELL_CONSOLE_MENU_ITEM).click()
        console = Console(self.page.locator(".jp-CodeConsole"))
        expect(console.banner).to_contain_text("async-kernel", timeout=KERNEL_START_TIMEOUT)
        return console


class Console:
    """A code console in the page."""

    def __init__(self, root: Locator) -> None:
        """Wrap the console whose widget is `root`."""
        self.root = root
        self.page = root.page
        self.banner = root.locator(".jp-CodeConsole-banner")
        """The kernel banner, shown once the console's kernel answered `kernel_info`."""
        self._cells = root.locator(".jp-CodeConsole-content .jp-CodeCell")

    def run(self, code: str) -> Output:
        """Type `code` into the prompt and press Shift+Enter; return the output area of its cell.

        Returns once the cell has left the prompt, not when it finished.
        """
        before = self._cells.count()
        self.root.locator(".jp-CodeConsole-promptCell .cm-content").click()
        self.page.keyboard.insert_text(code)
        self.page.keyboard.press("Shift+Enter")
        cell = self._cells.nth(before)
        expect(cell).to_be_attached(timeout=TIMEOUT)
        return Output(cell.locator(".jp-OutputArea"))

    def wait_for_subshell(self, *, timeout: float = TIMEOUT) -> None:
        """Wait until code typed here runs in a subshell, not in the kernel's main shell.

        JupyterLab shows the console as soon as the kernel answered `kernel_info`, and only then
        asks the kernel for a subshell; until the reply arrives the console's code goes to the
        main shell. Nothing in the page shows that moment, so this asks the kernel (every
        subshell runs on a thread of its own) until the answer says so.

        Raises:
            AssertionError: The console's code still ran on the main thread after `timeout` ms.
        """
        deadline = time.monotonic() + timeout / 1000
        while True:
            output = self.run(_MAIN_THREAD_PROBE)
            output.expect_contains("main thread:")
            if "main thread: False" in output.text():
                return
            if time.monotonic() > deadline:
                msg = f"the console's code still ran in the main shell after {timeout / 1000:.0f}s"
                raise AssertionError(msg)
