"""The debugger tests' kernel driver, subshell and attached debug client (one kernel a module)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from debug_client import DebugClient
from kernel_driver import Driver

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager


@pytest.fixture(scope="module")
def driver(kernel: tuple[KernelManager, BlockingKernelClient]) -> Driver:
    """A driver of the module's kernel, with `threading` imported in it."""
    d = Driver(kernel[1])
    d.run("import threading")
    return d


@pytest.fixture(scope="module")
def subshell(driver: Driver) -> str:
    """One subshell of the module's kernel."""
    return driver.create_subshell()


@pytest.fixture
def dbg(driver: Driver) -> Iterator[DebugClient]:
    """A debug client attached for one test, detached after it."""
    client = DebugClient(driver)
    client.attach()
    try:
        yield client
    finally:
        client.disconnect()
