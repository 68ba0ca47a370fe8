"""Tests for `async_kernel.kernelspec`: install, uninstall and find kernel specs."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from async_kernel import kernelspec
from async_kernel.kernelspec import KernelSpecNotFoundError

BASE_ARGV = [sys.executable, "-m", "async_kernel", "start", "-f", "{connection_file}"]


def read_spec(spec_dir: Path) -> dict[str, object]:
    return json.loads((spec_dir / "kernel.json").read_text(encoding="utf-8"))


def test_all_lists_the_public_names() -> None:
    for name in kernelspec.__all__:
        assert hasattr(kernelspec, name), name
    defined = {
        name
        for name, obj in vars(kernelspec).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == kernelspec.__name__
    }
    assert defined <= set(kernelspec.__all__)


def test_install_defaults_to_the_user_dir(home: Path) -> None:
    spec_dir = kernelspec.install()
    assert spec_dir == home / "data" / "kernels" / "async"
    assert read_spec(spec_dir) == {
        "argv": BASE_ARGV,
        "display_name": "Python 3 (async-kernel)",
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"debugger": True, "supported_encryption": ["curve"]},  # debugpy: dev extra
        "env": {},
    }


def test_install_user_flag_is_the_default_location(home: Path) -> None:
    assert kernelspec.install(user=True) == home / "data" / "kernels" / "async"


def test_install_prefix_with_backend_and_settings(home: Path) -> None:
    spec_dir = kernelspec.install(
        "async-trio",
        prefix=home / "pfx",
        backend="trio",
        settings={"Kernel.concurrency_mode": "blocking", "IPythonKernel.banner": "hi there"},
    )
    assert spec_dir == home / "pfx" / "share" / "jupyter" / "kernels" / "async-trio"
    spec = read_spec(spec_dir)
    assert spec["argv"] == [
        *BASE_ARGV,
        "--Kernel.backend=trio",
        "--Kernel.concurrency_mode=blocking",
        "--IPythonKernel.banner=hi there",
    ]
    assert spec["display_name"] == "Python 3 (async-kernel) trio"
    assert not (home / "data").exists()


def test_install_relative_prefix_returns_an_absolute_dir(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(home)
    spec_dir = kernelspec.install(prefix="rel")
    assert spec_dir.is_absolute()
    assert spec_dir == home / "rel" / "share" / "jupyter" / "kernels" / "async"


def test_install_sys_prefix(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "prefix", str(home / "env"))
    spec_dir = kernelspec.install("a", sys_prefix=True)
    assert spec_dir == home / "env" / "share" / "jupyter" / "kernels" / "a"


@pytest.mark.parametrize(
    "settings",
    [
        ["--Kernel.x=1", "Kernel.y=a=b"],
        {"Kernel.x": 1, "Kernel.y": "a=b"},
    ],
)
def test_settings_are_normalized(home: Path, settings: list[str] | dict[str, object]) -> None:
    spec = read_spec(kernelspec.install(settings=settings))
    assert spec["argv"] == [*BASE_ARGV, "--Kernel.x=1", "--Kernel.y=a=b"]


@pytest.mark.parametrize("setting", ["--Kernel.x", "Kernel=1", "--x=1", "--Kernel.x.y=1", "-K.x=1"])
def test_invalid_setting_is_refused(home: Path, setting: str) -> None:
    with pytest.raises(ValueError, match=r"--Class\.trait=value"):
        kernelspec.install(settings=[setting])
    assert not (home / "data").exists()


def test_backend_in_settings_sets_the_display_name(home: Path) -> None:
    spec = read_spec(kernelspec.install(settings=["--Kernel.backend=trio"]))
    assert spec["argv"] == [*BASE_ARGV, "--Kernel.backend=trio"]
    assert spec["display_name"] == "Python 3 (async-kernel) trio"


def test_backend_given_twice_is_not_duplicated(home: Path) -> None:
    spec = read_spec(kernelspec.install(backend="trio", settings=["--Kernel.backend=trio"]))
    assert spec["argv"] == [*BASE_ARGV, "--Kernel.backend=trio"]


def test_contradicting_backends_are_refused(home: Path) -> None:
    with pytest.raises(ValueError, match="contradicts"):
        kernelspec.install(backend="trio", settings=["--Kernel.backend=asyncio"])


def test_unknown_backend_is_refused(home: Path) -> None:
    with pytest.raises(ValueError, match="asyncio, trio"):
        kernelspec.install(backend="curio")  # pyright: ignore[reportArgumentType]


def test_custom_display_name(home: Path) -> None:
    spec = read_spec(kernelspec.install(display_name="Mine", backend="trio"))
    assert spec["display_name"] == "Mine"


@pytest.mark.parametrize("name", ["", "Async", "a b", "../evil", "a/b", "ké"])
def test_invalid_name_is_refused(home: Path, name: str) -> None:
    with pytest.raises(ValueError, match="Invalid kernel spec name"):
        kernelspec.install(name)
    assert not (home / "data").exists()


def test_several_locations_are_refused(home: Path) -> None:
    with pytest.raises(ValueError, match="at most one"):
        kernelspec.install(user=True, prefix=home / "pfx")
    with pytest.raises(ValueError, match="at most one"):
        kernelspec.uninstall(user=True, sys_prefix=True)


def test_reinstall_replaces_the_spec(home: Path) -> None:
    kernelspec.install(settings=["--Kernel.x=1"])
    spec = read_spec(kernelspec.install())
    assert spec["argv"] == BASE_ARGV


def test_uninstall(home: Path) -> None:
    spec_dir = kernelspec.install(prefix=home / "pfx")
    assert kernelspec.uninstall(prefix=home / "pfx") == spec_dir
    assert not spec_dir.exists()
    with pytest.raises(KernelSpecNotFoundError, match="No kernel spec 'async'"):
        kernelspec.uninstall(prefix=home / "pfx")


def test_uninstall_leaves_a_directory_that_is_not_a_spec(home: Path) -> None:
    stray = home / "data" / "kernels" / "async"
    stray.mkdir(parents=True)
    (stray / "precious.txt").write_text("keep me")
    with pytest.raises(KernelSpecNotFoundError):
        kernelspec.uninstall()
    assert (stray / "precious.txt").exists()


def test_data_dirs_order(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = home / "one", home / "two"
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join([str(first), "", str(second)]))
    env = Path(sys.prefix) / "share" / "jupyter"
    user = home / "data"

    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")
    dirs = kernelspec.data_dirs()
    assert dirs[:4] == [first, second, user, env]
    assert len(dirs) == len(set(dirs))

    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")
    assert kernelspec.data_dirs()[:4] == [first, second, env, user]


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="the Linux/XDG layout")
def test_user_data_dir_without_override(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTER_DATA_DIR")
    assert kernelspec.user_data_dir() == home / "home" / ".local" / "share" / "jupyter"
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg"))
    assert kernelspec.user_data_dir() == home / "xdg" / "jupyter"


def test_find_and_get(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")
    in_path = kernelspec.install("both", prefix=home / "path", display_name="from JUPYTER_PATH")
    kernelspec.install("both", display_name="from user dir")
    only_user = kernelspec.install("only-user")
    found = kernelspec.find_kernelspecs()
    assert found["both"] == in_path
    assert found["only-user"] == only_user
    assert kernelspec.get_kernelspec("both")["display_name"] == "from JUPYTER_PATH"
    with pytest.raises(KernelSpecNotFoundError, match="async-kernel install"):
        kernelspec.get_kernelspec("no-such-kernel")


def test_jupyter_client_finds_the_spec(home: Path) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = kernelspec.install(
        "async-jc", prefix=home / "path", backend="trio", settings=["--Kernel.x=1"]
    )
    manager = KernelSpecManager()
    assert Path(manager.find_kernel_specs()["async-jc"]) == spec_dir
    spec = manager.get_kernel_spec("async-jc")
    assert spec.argv == [*BASE_ARGV, "--Kernel.backend=trio", "--Kernel.x=1"]
    assert spec.display_name == "Python 3 (async-kernel) trio"
    assert spec.language == "python"
    assert spec.interrupt_mode == "signal"
    assert spec.metadata == {"debugger": True, "supported_encryption": ["curve"]}


def test_jupyter_client_sees_curve_support(home: Path) -> None:
    """What `transport_encryption = "auto"` and `"required"` look for in the spec."""
    from jupyter_client.manager import KernelManager

    kernelspec.install("async-curve", prefix=home / "path")
    km = KernelManager(kernel_name="async-curve", transport_encryption="required")
    assert km._kernel_supports_curve_encryption()  # pyright: ignore[reportPrivateUsage]


@pytest.mark.parametrize("mode", ["signal", "message"])
def test_interrupt_mode(home: Path, mode: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    kernelspec.install("async-int", prefix=home / "path", interrupt_mode=mode)
    assert KernelSpecManager().get_kernel_spec("async-int").interrupt_mode == mode


def test_unknown_interrupt_mode_is_refused(home: Path) -> None:
    with pytest.raises(ValueError, match="Unknown interrupt mode 'sigint'"):
        kernelspec.install(interrupt_mode="sigint")
    assert not (home / "data").exists()


def test_spec_says_no_debugger_without_debugpy(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where debugpy cannot be imported the spec says `debugger: false` (no toggle in Lab)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "debugpy" else real(name, *a)
    )
    assert read_spec(kernelspec.install())["metadata"] == {
        "debugger": False,
        "supported_encryption": ["curve"],
    }


def test_spec_argv_runs_the_start_command(home: Path) -> None:
    argv = read_spec(kernelspec.install())["argv"]
    assert isinstance(argv, list)
    result = subprocess.run(
        [*argv[:4], "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "-f CONNECTION_FILE" in result.stdout
