"""Tests for `async_kernel.cli`: the `async-kernel` command and `python -m async_kernel`."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest
from traitlets import Int, Unicode
from traitlets.config import Config, Configurable

from async_kernel import cli

BASE_ARGV = [sys.executable, "-m", "async_kernel", "start", "-f", "{connection_file}"]


@pytest.fixture
def env_prefix(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make `sys.prefix` a temporary directory, so that its config files are the test's."""
    monkeypatch.setattr(sys, "prefix", str(home / "env"))
    return home / "env"


class FakeKernel(Configurable):
    """Stands in for `async_kernel._kernel.Kernel`: records how `start` built it."""

    instances: ClassVar[list[FakeKernel]] = []
    exit_code: ClassVar[int | None] = None

    backend = Unicode("asyncio").tag(config=True)
    answer = Int(0).tag(config=True)
    banner = Unicode("").tag(config=True)
    profile = Unicode("default").tag(config=True)
    connection_file = Unicode("")

    def __init__(self, **kwargs: Any) -> None:
        self.config_given: Config = kwargs["config"]
        super().__init__(**kwargs)
        FakeKernel.instances.append(self)

    def run(self) -> int | None:
        return FakeKernel.exit_code


# traitlets looks a class's config up by its name, so the fake must be called Kernel.
FakeKernel.__name__ = "Kernel"


@pytest.fixture
def fake_kernel(monkeypatch: pytest.MonkeyPatch) -> type[FakeKernel]:
    """Install a fake `async_kernel._kernel` module whose `Kernel` is `FakeKernel`."""
    module = types.ModuleType("async_kernel._kernel")
    module.Kernel = FakeKernel  # pyright: ignore[reportAttributeAccessIssue]
    monkeypatch.setitem(sys.modules, "async_kernel._kernel", module)
    monkeypatch.setattr(FakeKernel, "instances", [])
    monkeypatch.setattr(FakeKernel, "exit_code", None)
    return FakeKernel


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_all_lists_the_public_names() -> None:
    for name in cli.__all__:
        assert hasattr(cli, name), name
    defined = {
        name
        for name, obj in vars(cli).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == cli.__name__
    }
    assert defined <= set(cli.__all__)


def test_console_script_points_at_main() -> None:
    scripts = importlib.metadata.entry_points(group="console_scripts")
    assert scripts["async-kernel"].value == "async_kernel.cli:main"


def test_python_m_help_in_a_subprocess() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "async_kernel", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for command in ("install", "uninstall", "list", "start"):
        assert command in result.stdout


def test_python_m_bad_usage_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "async_kernel", "frobnicate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    assert "install" in out
    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert out.startswith("async-kernel ")


def test_no_command_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([], capsys)
    assert code == 2
    assert "choose a command" in err


def test_install_collects_settings(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["install", "--name", "t", "--prefix", str(home / "pfx"), "--backend", "trio"]
    code, out, err = run([*argv, "--Kernel.answer=42", "--Kernel.banner=hello world"], capsys)
    assert code == 0, err
    spec_dir = home / "pfx" / "share" / "jupyter" / "kernels" / "t"
    assert str(spec_dir) in out
    spec = json.loads((spec_dir / "kernel.json").read_text(encoding="utf-8"))
    assert spec["argv"] == [
        *BASE_ARGV,
        "--Kernel.backend=trio",
        "--Kernel.answer=42",
        "--Kernel.banner=hello world",
    ]
    assert spec["display_name"] == "Python 3 (async-kernel) trio"


@pytest.mark.parametrize("mode", ["message", "signal"])
def test_install_interrupt_mode(home: Path, capsys: pytest.CaptureFixture[str], mode: str) -> None:
    code, _, err = run(["install", "--interrupt-mode", mode], capsys)
    assert code == 0, err
    spec = json.loads((home / "data" / "kernels" / "async" / "kernel.json").read_text())
    assert spec["interrupt_mode"] == mode
    assert spec["argv"] == BASE_ARGV


def test_install_defaults_to_user_dir(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["install", "--display-name", "Mine"], capsys)
    assert code == 0, err
    spec = json.loads((home / "data" / "kernels" / "async" / "kernel.json").read_text())
    assert spec["display_name"] == "Mine"
    assert spec["argv"] == BASE_ARGV


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["install", "--name", "Bad Name"], "Invalid kernel spec name 'Bad Name'"),
        (["install", "--bogus"], "unrecognized arguments for 'install': --bogus"),
        (["install", "--Kernel.answer", "1"], "--Class.trait=value"),
        (["install", "--backend", "curio"], "invalid choice: 'curio'"),
        (["install", "--interrupt-mode", "sigint"], "invalid choice: 'sigint'"),
        (["install", "--user", "--sys-prefix"], "not allowed with argument"),
        (["uninstall", "--Kernel.answer=1"], "unrecognized arguments for 'uninstall'"),
        (["list", "extra"], "unrecognized arguments for 'list': extra"),
        (["start"], "give -f CONNECTION_FILE, or --registration-file REGISTRATION_FILE"),
        (["start", "-f", "c.json", "--Kernel.answer", "1"], "--Class.trait=value"),
        (["start", "-f", "c.json", "script.py", "--bogus"], "arguments for 'start': script.py"),
    ],
)
def test_bad_usage_exits_2(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err
    assert not (home / "data").exists()


def test_list_and_uninstall(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["install", "--name", "one"], capsys)[0] == 0
    assert run(["install", "--name", "two", "--prefix", str(home / "path")], capsys)[0] == 0
    code, out, _ = run(["list"], capsys)
    assert code == 0
    lines = {line.split()[0]: line.split()[-1] for line in out.splitlines()}
    assert lines["one"] == str(home / "data" / "kernels" / "one")
    assert lines["two"] == str(home / "path" / "share" / "jupyter" / "kernels" / "two")

    code, out, _ = run(["uninstall", "--name", "one"], capsys)
    assert code == 0
    assert "Removed kernel spec 'one'" in out
    assert "one" not in run(["list"], capsys)[1].split()

    code, _, err = run(["uninstall", "--name", "one"], capsys)
    assert code == 1
    assert "No kernel spec 'one'" in err


def test_install_into_unwritable_location_exits_1(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = home / "file"
    blocker.write_text("not a directory")
    code, _, err = run(["install", "--prefix", str(blocker)], capsys)
    assert code == 1
    assert "cannot write the kernel spec" in err


@pytest.mark.parametrize(("returned", "code"), [(None, 0), (0, 0), (3, 3)])
def test_start_runs_the_kernel(
    env_prefix: Path,
    fake_kernel: type[FakeKernel],
    capsys: pytest.CaptureFixture[str],
    returned: int | None,
    code: int,
) -> None:
    fake_kernel.exit_code = returned
    assert run(["start", "-f", "/tmp/kernel-1.json"], capsys)[0] == code
    (kernel,) = fake_kernel.instances
    assert kernel.connection_file == "/tmp/kernel-1.json"
    assert kernel.backend == "asyncio"


def test_start_ignores_positional_arguments(
    env_prefix: Path, fake_kernel: type[FakeKernel], capsys: pytest.CaptureFixture[str]
) -> None:
    """`jupyter run script.py` starts the kernel with the script's name, as for ipykernel."""
    code, _, err = run(["start", "-f", "c.json", "script.py", "--Kernel.answer=7", "x"], capsys)
    assert code == 0, err
    assert err == "async-kernel start: ignoring arguments: script.py x\n"
    (kernel,) = fake_kernel.instances
    assert kernel.answer == 7


def test_start_applies_settings(
    env_prefix: Path, fake_kernel: type[FakeKernel], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["start", "-f", "c.json", "--Kernel.backend=trio", "--Kernel.answer=42"]
    code, _, err = run([*argv, "--Kernel.banner=a b=c", "--Other.thing=x"], capsys)
    assert code == 0, err
    (kernel,) = fake_kernel.instances
    assert kernel.backend == "trio"
    assert kernel.answer == 42
    assert kernel.banner == "a b=c"
    assert kernel.config_given.Other.thing == "x"


def write_config(directory: Path, py: str | None = None, js: dict[str, Any] | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if py is not None:
        (directory / "async_kernel_config.py").write_text(py, encoding="utf-8")
    if js is not None:
        (directory / "async_kernel_config.json").write_text(json.dumps(js), encoding="utf-8")


def test_start_reads_config_files_with_precedence(
    home: Path, env_prefix: Path, fake_kernel: type[FakeKernel], capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(
        env_prefix / "etc" / "jupyter",
        py="c.Kernel.banner = 'env'\nc.Kernel.answer = 1\nc.Other.env_only = 'env'\n",
    )
    write_config(
        home / "config",
        py="c.Kernel.banner = 'user py'\nc.Kernel.backend = 'trio'\nc.Other.py = 'py'\n",
        js={"Kernel": {"banner": "user json"}, "Other": {"json": "json"}},
    )
    code, _, err = run(["start", "-f", "c.json", "--Kernel.answer=7"], capsys)
    assert code == 0, err
    (kernel,) = fake_kernel.instances
    assert kernel.banner == "user json"  # json beats py; the user dir beats sys.prefix
    assert kernel.backend == "trio"  # from the user's py file
    assert kernel.answer == 7  # the command line beats every file
    other = kernel.config_given.Other
    assert (other.env_only, other.py, other.json) == ("env", "py", "json")


def test_config_path_beats_the_user_dir(
    home: Path, env_prefix: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(home / "config", js={"Kernel": {"banner": "user"}})
    write_config(home / "extra", js={"Kernel": {"banner": "extra"}})
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(home / "extra"))
    assert cli.config_dirs() == [home / "extra", home / "config", env_prefix / "etc" / "jupyter"]
    assert cli.load_config().Kernel.banner == "extra"


def test_config_dir_defaults_to_home(
    home: Path, env_prefix: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JUPYTER_CONFIG_DIR")
    write_config(home / "home" / ".jupyter", py="c.Kernel.answer = 5\n")
    assert cli.load_config().Kernel.answer == 5


def test_broken_config_file_exits_1(
    home: Path, env_prefix: Path, fake_kernel: type[FakeKernel], capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(home / "config", py="c.Kernel.banner = (\n")
    code, _, err = run(["start", "-f", "c.json"], capsys)
    assert code == 1
    assert "async_kernel_config.py" in err
    assert fake_kernel.instances == []
