"""Libraries know they run in a Jupyter kernel, as on ipykernel, with or without ipykernel.

rich (`Console().is_jupyter`), tqdm (`tqdm.auto`, `tqdm.autonotebook` give widget bars), plotly
(the default renderer ipykernel gets, `plotly_mimetype`) and code that checks the shell's class
name or `"IPKernelApp" in get_ipython().config` are driven over the real protocol. One kernel
runs where ipykernel is importable (asyncio), one where a meta-path finder hides it (trio), so
that detection is shown not to depend on ipykernel.
"""

from __future__ import annotations

import os
import sys
import textwrap
import types
from typing import TYPE_CHECKING, Any

import pytest
from kernel_driver import Driver, code
from traitlets.config import Config

from async_kernel.ipython._compat import (
    NOTEBOOK_ENVIRON,
    SHELL_MODULE,
    ZMQInteractiveShell,
    shell_module,
)
from async_kernel.ipython._shell import AsyncInteractiveShell

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from jupyter_client.manager import KernelManager

pytestmark = pytest.mark.timeout(120)

HIDE_IPYKERNEL = textwrap.dedent(
    """
    import sys

    class HideIPyKernel:
        def find_spec(self, name, path=None, target=None):
            if name == "ipykernel" or name.startswith("ipykernel."):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden)", name=name)
            return None

    sys.meta_path.insert(0, HideIPyKernel())
    """
)
"""A `sitecustomize` for the kernel process: `import ipykernel` fails as if not installed."""

DETECTION_ENV = (
    "PLOTLY_RENDERER",
    "VSCODE_PID",
    "COLAB_NOTEBOOK_ID",
    "AZURE_NOTEBOOKS_HOST",
    "NTERACT_EXE",
    "COCALC_PROJECT_ID",
    "DATABRICKS_RUNTIME_VERSION",
    "QT_API",
)
"""Variables of the test's environment that would make plotly or tqdm pick another frontend."""

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(
    scope="module",
    params=[("async", False), ("async-trio", True)],
    ids=["asyncio-with-ipykernel", "trio-ipykernel-hidden"],
)
def detect(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Driver, KernelManager, bool]]:
    """A kernel, its driver, and whether ipykernel is hidden from it."""
    from jupyter_client.manager import start_new_kernel

    kernel_name, hidden = request.param
    env = {k: v for k, v in os.environ.items() if k not in DETECTION_ENV}
    if hidden:
        site = tmp_path_factory.mktemp("hide-ipykernel")
        (site / "sitecustomize.py").write_text(HIDE_IPYKERNEL, encoding="utf-8")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    km, kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=60, env=env)
    try:
        yield Driver(kc), km, hidden
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def displays(d: Driver, msg_id: str) -> list[dict[str, Any]]:
    """The data of the `display_data` messages of `msg_id`."""
    return [m["content"]["data"] for _, m in d.got(msg_id).iopub if m["msg_type"] == "display_data"]


def test_ipykernel_is_hidden_where_it_should_be(detect: tuple[Driver, KernelManager, bool]) -> None:
    d, _, hidden = detect
    out = d.run(
        code(
            """
            import sys
            try:
                import ipykernel
            except ModuleNotFoundError:
                print("ipykernel: missing")
            else:
                print("ipykernel: found")
            """
        )
    )
    assert out == f"ipykernel: {'missing' if hidden else 'found'}\n"


def test_the_shell_looks_like_ipykernels(detect: tuple[Driver, KernelManager, bool]) -> None:
    d, km, _ = detect
    out = d.run(
        code(
            """
            ip = get_ipython()
            from async_kernel.ipython._shell import AsyncInteractiveShell
            print(ip.__class__.__name__, type(ip).__module__)
            print(isinstance(ip, AsyncInteractiveShell))
            print("IPKernelApp" in ip.config, ip.config.IPKernelApp.connection_file)
            import sys
            print(sys.modules["ipykernel.zmqshell"].ZMQInteractiveShell is type(ip))
            """
        )
    )
    assert out.splitlines() == [
        "ZMQInteractiveShell ipykernel.zmqshell",
        "True",
        f"True {km.connection_file}",
        "True",
    ]


def test_rich_renders_for_jupyter(detect: tuple[Driver, KernelManager, bool]) -> None:
    d, _, _ = detect
    cell = d.execute(
        code(
            """
            from rich.console import Console
            import rich
            print("is_jupyter:", Console().is_jupyter)
            rich.print("[bold]loud[/bold]")
            """
        )
    )
    assert d.reply(cell)["content"]["status"] == "ok", d.errors(cell)
    assert d.stdout(cell) == "is_jupyter: True\n", "rich.print goes to a display, not stdout"
    (shown,) = displays(d, cell)
    assert "loud" in shown["text/plain"]
    assert "<span" in shown["text/html"]
    assert "bold" in shown["text/html"]


def test_click_keeps_its_colours(detect: tuple[Driver, KernelManager, bool]) -> None:
    d, _, _ = detect
    out = d.run(
        "import click\nclick.secho('warm', fg='red')\nclick.echo(click.style('x', bold=True))"
    )
    assert out.splitlines() == ["\x1b[31mwarm\x1b[0m", "\x1b[1mx\x1b[0m"]


@pytest.mark.parametrize("module", ["tqdm.auto", "tqdm.autonotebook"])
def test_tqdm_gives_widget_bars(detect: tuple[Driver, KernelManager, bool], module: str) -> None:
    d, _, _ = detect
    cell = d.execute(
        code(
            f"""
            import warnings
            from tqdm import TqdmExperimentalWarning
            from tqdm.notebook import tqdm_notebook
            warnings.simplefilter("ignore", TqdmExperimentalWarning)
            from {module} import tqdm
            print("notebook bar:", issubclass(tqdm, tqdm_notebook))
            for _ in tqdm(range(3)):
                pass
            """
        )
    )
    assert d.reply(cell)["content"]["status"] == "ok", d.errors(cell)
    assert d.stdout(cell) == "notebook bar: True\n"
    widgets = [data for data in displays(d, cell) if data.get(WIDGET_MIME)]
    assert len(widgets) == 1, displays(d, cell)


def test_plotly_picks_ipykernels_renderer(detect: tuple[Driver, KernelManager, bool]) -> None:
    d, _, _ = detect
    cell = d.execute(
        code(
            """
            import plotly.io as pio
            import plotly.graph_objects as go
            print("renderer:", pio.renderers.default)
            go.Figure(go.Bar(y=[1, 3, 2])).show()
            """
        )
    )
    assert d.reply(cell)["content"]["status"] == "ok", d.errors(cell)
    assert d.stdout(cell) == "renderer: plotly_mimetype\n"
    (shown,) = displays(d, cell)
    assert "application/vnd.plotly.v1+json" in shown
    assert "text/html" not in shown, "no plotly.js bundle, as with ipykernel"


def test_the_environment_is_ipykernels(detect: tuple[Driver, KernelManager, bool]) -> None:
    d, _, _ = detect
    out = d.run(f"import os\nprint({{k: os.environ.get(k) for k in {list(NOTEBOOK_ENVIRON)!r}}})")
    assert out.strip() == repr(NOTEBOOK_ENVIRON)


# --- in-process units ----------------------------------------------------------------------


def test_the_shell_class_is_named_as_ipykernels() -> None:
    assert ZMQInteractiveShell.__name__ == "ZMQInteractiveShell"
    assert ZMQInteractiveShell.__module__ == SHELL_MODULE
    assert issubclass(ZMQInteractiveShell, AsyncInteractiveShell)


def test_shell_module_holds_the_shell() -> None:
    module = shell_module()
    assert isinstance(module, types.ModuleType)
    assert module.__name__ == SHELL_MODULE
    assert module.ZMQInteractiveShell is ZMQInteractiveShell
    assert module.__spec__ is not None
    assert module.__spec__.name == SHELL_MODULE
    assert SHELL_MODULE not in sys.modules or sys.modules[SHELL_MODULE] is not module


def test_the_shell_declares_ipkernelapp(tmp_path: Path) -> None:
    kernel = types.SimpleNamespace(connection_file=str(tmp_path / "kernel-1.json"))
    for given, expected in ((kernel, kernel.connection_file), (None, None)):
        config = Config()
        config.HistoryManager.hist_file = ":memory:"  # closed at exit, with nothing to write
        shell = ZMQInteractiveShell(config=config, kernel=given, outbox=None)
        assert "IPKernelApp" in shell.config
        assert shell.config.IPKernelApp.get("connection_file") == expected


def test_callers_table_is_not_displayed_by_rich(detect: tuple[Driver, KernelManager, bool]) -> None:
    """rich sees a notebook now: `%callers` must still only return its table, not display it."""
    d, _, _ = detect
    cell = d.execute("%callers")
    assert d.reply(cell)["content"]["status"] == "ok", d.errors(cell)
    kinds = [m["msg_type"] for _, m in d.got(cell).iopub if m["msg_type"] not in ("status",)]
    assert kinds == ["execute_input", "execute_result"]
