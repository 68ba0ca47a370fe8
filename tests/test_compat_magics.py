"""ipykernel's kernel magics over a real kernel (asyncio and trio), with ipykernel's messages.

`%connect_info` is followed by a second client that connects with the file it names; `%qtconsole`
starts a stand-in `qtconsole` package (put on the kernel's `PYTHONPATH` by the cell) that reports
its command line over a socket; `%man` runs stand-in `man` and `col` commands.
"""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from kernel_driver import TIMEOUT, Driver, code

import async_kernel.ipython._ipykernel_magics
from async_kernel.ipython._ipykernel_magics import CLEAR_SCREEN, QTCONSOLE_CODE

if TYPE_CHECKING:
    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager

pytestmark = pytest.mark.timeout(120)

IPYKERNEL_MAGICS = {
    "autosave",
    "clear",
    "connect_info",
    "ed",
    "edit",
    "less",
    "man",
    "more",
    "qtconsole",
}
"""The line magics ipykernel adds to IPython's (`%subshell` too, which ours has its own way)."""


@pytest.fixture(scope="module")
def driver(kernel: tuple[KernelManager, BlockingKernelClient]) -> Driver:
    return Driver(kernel[1])


def payloads(d: Driver, msg_id: str) -> list[dict[str, Any]]:
    reply = d.reply(msg_id)
    assert reply["content"]["status"] == "ok", d.errors(msg_id)
    return reply["content"]["payload"]


def test_all_is_declared() -> None:
    assert set(async_kernel.ipython._ipykernel_magics.__all__) == {
        "CLEAR_SCREEN",
        "QTCONSOLE_CODE",
        "IPyKernelMagics",
    }


def test_lsmagic_lists_ipykernels_magics(driver: Driver) -> None:
    out = driver.run("print(get_ipython().run_line_magic('lsmagic', ''))")
    listed = {word.lstrip("%") for word in out.split() if word.startswith("%")}
    assert IPYKERNEL_MAGICS | {"callers", "subshell"} <= listed


def connect_with_connect_info(d: Driver) -> tuple[str, str]:
    """Run `%connect_info`, connect a second client with the file it names; return both."""
    from jupyter_client import BlockingKernelClient, find_connection_file

    out = d.run("%connect_info")
    info, _, hint = out.partition("\n\n")
    commands = [line.split("$> ")[1] for line in hint.splitlines() if "$> " in line]
    assert commands[0] == "jupyter <app> --existing <file>"
    assert commands[-1] == "jupyter <app> --existing"
    named = commands[1].removeprefix("jupyter <app> --existing ")
    client = BlockingKernelClient(connection_file=find_connection_file(named))
    client.load_connection_file()
    client.start_channels()
    try:
        reply = client.kernel_info(reply=True, timeout=TIMEOUT)
        assert reply["content"]["status"] == "ok"
        assert reply["content"]["implementation"] == "async_kernel"
    finally:
        client.stop_channels()
    return info, named


def test_connect_info_names_a_file_another_client_can_use(
    driver: Driver, kernel: tuple[KernelManager, Any]
) -> None:
    km, _ = kernel
    info, named = connect_with_connect_info(driver)
    assert json.loads(info) == json.loads(Path(km.connection_file).read_text())
    assert named == km.connection_file


def test_connect_info_gives_the_bare_name_in_the_runtime_dir() -> None:
    """`--existing NAME` looks in Jupyter's runtime directory, so the name is enough there."""
    from jupyter_client.manager import KernelManager
    from jupyter_core.paths import jupyter_runtime_dir

    runtime = Path(jupyter_runtime_dir())
    runtime.mkdir(parents=True, exist_ok=True)
    name = f"kernel-{uuid.uuid4()}.json"
    km = KernelManager(kernel_name="async", connection_file=str(runtime / name))
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        _, named = connect_with_connect_info(Driver(kc))
        assert named == name
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


FAKE_QTCONSOLE = """
import json, os, socket, sys

def main():
    report = {"argv": sys.argv, "session_leader": os.getsid(0) == os.getpid()}
    with socket.create_connection(("127.0.0.1", int(os.environ["FAKE_QT_PORT"])), 10) as s:
        s.sendall(json.dumps(report).encode())
"""


def test_qtconsole_starts_qtconsole_on_this_kernel(
    driver: Driver, kernel: tuple[KernelManager, Any], tmp_path: Path
) -> None:
    km, _ = kernel
    package = tmp_path / "qtconsole"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "qtconsoleapp.py").write_text(FAKE_QTCONSOLE, encoding="utf-8")
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(TIMEOUT)
        port = server.getsockname()[1]
        driver.run(
            code(
                f"""
                import os
                path = [{str(tmp_path)!r}, os.environ.get("PYTHONPATH", "")]
                os.environ["PYTHONPATH"] = os.pathsep.join(path)
                os.environ["FAKE_QT_PORT"] = "{port}"
                %qtconsole --style monokai
                """
            )
        )
        conn, _ = server.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            data = b"".join(iter(lambda: conn.recv(65536), b""))
    report = json.loads(data)
    assert report["argv"] == ["-c", "--existing", km.connection_file, "--style", "monokai"]
    assert report["session_leader"], "its own session: an interrupt of the kernel spares it"
    assert QTCONSOLE_CODE == "from qtconsole import qtconsoleapp; qtconsoleapp.main()"


def test_autosave_sends_the_notebooks_javascript(driver: Driver) -> None:
    for arg, ms, printed in (
        ("30", 30000, "Autosaving every 30 seconds\n"),
        ("0", 0, "Autosave disabled\n"),
    ):
        cell = driver.execute(f"%autosave {arg}")
        assert payloads(driver, cell) == []
        (shown,) = [m for _, m in driver.got(cell).iopub if m["msg_type"] == "display_data"]
        script = f"IPython.notebook.set_autosave_interval({ms})"
        assert shown["content"]["data"] == {"application/javascript": script}
        assert driver.stdout(cell) == printed
    bad = driver.execute("%autosave soon")
    content = driver.reply(bad)["content"]
    assert (content["ename"], content["evalue"]) == (
        "UsageError",
        "%autosave requires an integer, got 'soon'",
    )


def test_clear_prints_the_terminal_clear(driver: Driver) -> None:
    assert driver.run("%clear") == CLEAR_SCREEN == "\x1b[H\x1b[2J"


def test_less_and_more_page_a_file(driver: Driver, tmp_path: Path) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("first line\nsecond line\n", encoding="utf-8")
    py_file = tmp_path / "mod.py"
    py_file.write_text("def f():\n    return 1\n", encoding="utf-8")
    for magic in ("less", "more"):
        (page,) = payloads(driver, driver.execute(f"%{magic} {text_file}"))
        assert page == {"source": "page", "data": {"text/plain": text_file.read_text()}, "start": 0}
    (page,) = payloads(driver, driver.execute(f"%less {py_file}"))
    shown = page["data"]["text/plain"]
    assert "\x1b[" in shown, "python is highlighted"
    assert "return" in shown
    missing = driver.reply(driver.execute("%less"))["content"]
    assert (missing["ename"], missing["evalue"]) == ("UsageError", "Missing filename.")


def test_man_pages_the_man_page(driver: Driver, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("man", 'echo "MANUAL OF $1"'), ("col", "cat")):
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
        path.chmod(0o755)
    setup = f"import os\nos.environ['PATH'] = {str(bin_dir)!r} + os.pathsep + os.environ['PATH']"
    driver.run(setup)
    (page,) = payloads(driver, driver.execute("%man ls"))
    assert page == {"source": "page", "data": {"text/plain": "MANUAL OF ls\n"}, "start": 0}


def test_edit_asks_the_client_to_open_an_editor(driver: Driver, tmp_path: Path) -> None:
    target = tmp_path / "edit_me.py"
    target.write_text("x = 1\n", encoding="utf-8")
    for cell_code, line in ((f"%edit {target}", None), (f"%ed -n 3 {target}", "3")):
        (edit,) = payloads(driver, driver.execute(cell_code))
        expected = {"source": "edit_magic", "filename": str(target.resolve()), "line_number": line}
        assert edit == expected


def test_the_magics_in_plain_ipython() -> None:
    """Without a kernel there is no connection file: the two that need one say so."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from async_kernel.ipython._ipykernel_magics import IPyKernelMagics

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell(config=config)
    shell.register_magics(IPyKernelMagics)
    for magic in ("connect_info", "qtconsole"):
        with pytest.warns(UserWarning, match="connection file"):
            shell.run_line_magic(magic, "")
