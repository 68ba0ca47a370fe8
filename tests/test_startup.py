"""IPython's start-up, as ipykernel does it: profile config, startup files, exec_lines, extensions.

Each kernel here gets an IPython directory of its own (`$IPYTHONDIR`) with a profile written by
the test, and is driven over the protocol.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from kernel_driver import Driver, code

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(120)


@contextlib.contextmanager
def started(ipython_dir: Path, *args: str, config_dir: Path | None = None) -> Iterator[Driver]:
    """A kernel on `ipython_dir` (and Jupyter config dir `config_dir`), started with `args`."""
    from jupyter_client.manager import KernelManager

    env = {**os.environ, "IPYTHONDIR": str(ipython_dir)}
    if config_dir is not None:
        env["JUPYTER_CONFIG_DIR"] = str(config_dir)
    km = KernelManager(kernel_name="async")
    km.start_kernel(env=env, extra_arguments=list(args))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        yield Driver(kc)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(code(text) + "\n")


@pytest.fixture
def ipython_dir(tmp_path: Path) -> Path:
    """A profile with startup files, exec_lines, exec_files and an extension."""
    where = tmp_path / "ipython"
    profile = where / "profile_default"
    write(profile / "startup" / "00-first.py", "order = ['startup .py']")
    write(
        profile / "startup" / "20-magic.ipy",
        """
        order.append('startup .ipy')
        %alias_magic quiet_time time
        """,
    )
    # As in IPython, a startup file that raises ends the startup files.
    write(profile / "startup" / "90-broken.py", "raise RuntimeError('a broken startup file')")
    write(profile / "startup" / "95-never.py", "order.append('after the broken file')")
    write(where / "extra.py", "order.append('exec_files')")
    write(
        profile / "ipython_config.py",
        """
        c.InteractiveShellApp.exec_lines = ["order.append('exec_lines')"]
        c.InteractiveShellApp.extensions = ["autoreload"]
        c.InteractiveShell.autocall = 1
        """,
    )
    write(
        profile / "ipython_kernel_config.py",
        """
        c.IPKernelApp.exec_files = ["extra.py"]
        c.InteractiveShell.ast_node_interactivity = "all"
        """,
    )
    return where


def test_startup_files_exec_lines_and_files_run_in_order(ipython_dir: Path) -> None:
    with started(ipython_dir) as d:
        out = d.run("print(order)")
        assert out.strip() == str(["startup .py", "startup .ipy", "exec_lines", "exec_files"])
        # A startup file's magic is there; autoreload (an extension) is loaded.
        d.run("%quiet_time pass")
        d.run("%autoreload 2")


def test_profile_config_files_apply_and_the_kernels_own_config_wins(
    ipython_dir: Path, tmp_path: Path
) -> None:
    config_dir = tmp_path / "jupyter"
    config_dir.mkdir()
    (config_dir / "async_kernel_config.json").write_text(
        json.dumps({"InteractiveShell": {"autocall": 2}})
    )
    with started(ipython_dir, config_dir=config_dir) as d:
        out = d.run("ip = get_ipython(); print(ip.autocall, ip.ast_node_interactivity)")
        assert out.split() == ["2", "all"]


def test_what_startup_defined_is_hidden_from_who(ipython_dir: Path) -> None:
    with started(ipython_dir) as d:
        assert "order" not in d.run("%who")
        d.run("mine = 1")
        assert "mine" in d.run("%who")


def test_stored_variables_come_back_in_a_new_kernel(tmp_path: Path) -> None:
    where = tmp_path / "ipython"
    write(where / "profile_default" / "ipython_config.py", "c.StoreMagics.autorestore = True")
    with started(where) as d:
        d.run("kept = [1, 2, 3]\n%store kept")
    with started(where) as d:
        assert d.run("print(kept)").strip() == "[1, 2, 3]"


def test_another_profile_is_chosen_with_profile(ipython_dir: Path) -> None:
    write(ipython_dir / "profile_other" / "startup" / "00.py", "which = 'other'")
    with started(ipython_dir, "--profile", "other") as d:
        assert d.run("print(which)").strip() == "other"
        assert d.run("print('order' in dir())").strip() == "False"
        location = d.run("print(get_ipython().profile_dir.location)").strip()
        assert location == str(ipython_dir / "profile_other")


def start_failing(tmp_path: Path, *args: str) -> str:
    """Run `async-kernel start` on `tmp_path/ipython`; check it exits 1 at once; its stderr."""
    connection_file = tmp_path / "kernel.json"
    done = subprocess.run(
        [sys.executable, "-m", "async_kernel", "start", "-f", str(connection_file), *args],
        env={**os.environ, "IPYTHONDIR": str(tmp_path / "ipython")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done
    assert not connection_file.exists()
    return done.stderr


def test_a_missing_profile_is_a_clear_error(tmp_path: Path) -> None:
    stderr = start_failing(tmp_path, "--profile", "nowhere")
    assert "IPython profile 'nowhere' not found" in stderr


def test_a_broken_config_file_is_a_clear_error(tmp_path: Path) -> None:
    where = tmp_path / "ipython"
    write(where / "profile_default" / "ipython_kernel_config.py", "c.InteractiveShell.x = (")
    assert "ipython_kernel_config.py" in start_failing(tmp_path)
