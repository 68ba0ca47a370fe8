"""Fixtures of the browser tests: one JupyterLab server and one Chromium per module.

The tests need Playwright (the `test` extra), JupyterLab (the `dev` extra) and a Chromium
executable (`apt-get install chromium`: Playwright's own browser downloads are not used). When
one is missing every e2e test is skipped and the reason says what to install; with
`ASYNC_KERNEL_E2E=require` in the environment (`.ci/run` sets it once Chromium is there) they
error instead, so a check cannot pass by skipping them.

Nothing here imports Playwright at import time, so collection works without it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator, Sequence
    from pathlib import Path

    from lab_server import LabServer
    from lab_ui import Notebook, OpenNotebook
    from playwright.sync_api import Browser, Page

REQUIRE_ENV = "ASYNC_KERNEL_E2E"
"""Set to `require` to make a missing prerequisite an error instead of a skip."""

# Chromium resolves no host name at all (only 127.0.0.1 is left alone), so the page cannot
# reach anything but the test server; and no proxy from the environment.
_CHROMIUM_ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--no-proxy-server",
    "--disable-dev-shm-usage",
]

_FAILED = pytest.StashKey[bool]()


def chromium_executable() -> str | None:
    """The path of the system's Chromium, if there is one on `PATH`."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing_prerequisite() -> str | None:
    """What the e2e tests lack to run, or None when they can run."""
    if importlib.util.find_spec("playwright") is None:
        return 'Playwright is not installed: pip install -e ".[test]"'
    if importlib.util.find_spec("jupyterlab") is None:
        return 'JupyterLab is not installed: pip install -e ".[dev]"'
    if chromium_executable() is None:
        return "no chromium on PATH: install it, e.g. apt-get install -y chromium"
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember on the item whether its call failed, for the page fixture's teardown."""
    report: pytest.TestReport = yield
    if call.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture(scope="module")
def e2e_prerequisites() -> None:
    """Skip (or, when required, fail) unless Playwright, JupyterLab and Chromium are there."""
    if (missing := missing_prerequisite()) is None:
        return
    if os.environ.get(REQUIRE_ENV) == "require":
        pytest.fail(f"{REQUIRE_ENV}=require, but the e2e tests cannot run: {missing}")
    pytest.skip(f"browser e2e test: {missing}")


@pytest.fixture(scope="module")
def lab(e2e_prerequisites: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A JupyterLab server on this kernel's kernelspec, isolated in a temporary directory."""
    from lab_server import LabServer

    server = LabServer.start(tmp_path_factory.mktemp("jupyterlab"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(e2e_prerequisites: None) -> Iterator[Browser]:
    """A headless Chromium (the system's), driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=chromium_executable(), headless=True, args=_CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(
    request: pytest.FixtureRequest, lab: LabServer, browser: Browser, tmp_path: Path
) -> Iterator[Page]:
    """A fresh browser page for one test; the test's kernels are shut down afterwards.

    When the test fails, a screenshot goes to its `tmp_path` and the tail of the server's log
    is printed (pytest shows both under the failure).
    """
    from lab_ui import TIMEOUT

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT)
    page = context.new_page()
    try:
        yield page
        if request.node.stash.get(_FAILED, False):
            screenshot = tmp_path / "failure.png"
            page.screenshot(path=screenshot)
            print(f"screenshot: {screenshot}\n{lab.log_tail()}")
    finally:
        try:
            context.close()
        finally:
            lab.shutdown_sessions()


@pytest.fixture
def open_notebook(page: Page, lab: LabServer) -> OpenNotebook:
    """Save a notebook of code cells into the server's root and open it in the page."""
    from lab_ui import Notebook

    def open_notebook(name: str, sources: Sequence[str]) -> Notebook:
        return Notebook.open(page, lab, lab.create_notebook(name, sources))

    return open_notebook
