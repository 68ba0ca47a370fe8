"""Shared fixtures.

* Every `@pytest.mark.anyio` test runs on asyncio and on trio.
* Before collection, kernelspecs `async` (asyncio) and `async-trio` are installed into a
  temporary prefix that `JUPYTER_PATH` points at, and IPython gets a temporary profile dir, so
  protocol tests start real kernel processes through `jupyter_client` without touching the
  user's Jupyter or IPython setup.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from async_kernel import kernelspec

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager
    from raw_client import RawClient

KERNEL_NAMES = ("async", "async-trio")
"""The kernelspecs the tests install: one per backend."""

_tmp: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Install the test kernelspecs and isolate Jupyter and IPython dirs."""
    global _tmp
    _tmp = Path(tempfile.mkdtemp(prefix="async-kernel-tests-"))
    prefix = _tmp / "prefix"
    kernelspec.install("async", prefix=prefix, display_name="async-kernel (tests)")
    kernelspec.install(
        "async-trio", prefix=prefix, backend="trio", display_name="async-kernel trio (tests)"
    )
    os.environ["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
    os.environ["IPYTHONDIR"] = str(_tmp / "ipython")
    os.environ["JUPYTER_PLATFORM_DIRS"] = "1"
    os.environ.setdefault("JUPYTER_RUNTIME_DIR", str(_tmp / "runtime"))
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the temporary dirs."""
    if _tmp is not None:
        shutil.rmtree(_tmp, ignore_errors=True)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every Jupyter location at `tmp_path`, so nothing is written to the real home."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "path" / "share" / "jupyter"))
    for name in ("JUPYTER_CONFIG_PATH", "JUPYTER_PREFER_ENV_PATH", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each `@pytest.mark.anyio` test on both backends."""
    return request.param


@pytest.fixture(params=KERNEL_NAMES, scope="module")
def kernel(request: pytest.FixtureRequest) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    """A running kernel process (asyncio and trio) and a connected blocking client."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=request.param, startup_timeout=60)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


@pytest.fixture(scope="module")
def raw(kernel: tuple[KernelManager, BlockingKernelClient]) -> Iterator[RawClient]:
    """Raw DEALER sockets on the module's kernel, for frames no well-behaved client sends."""
    from raw_client import RawClient

    km, _ = kernel
    client = RawClient(km.get_connection_info())
    try:
        yield client
    finally:
        client.close()
