"""ipykernel's kernel and shell API over a real kernel (asyncio and trio), as notebooks use it.

`kernel.session.send(kernel.iopub_socket, ...)`, `get_ipython().parent_header`,
`kernel.get_parent()`, `set_parent` on the shell and the kernel, `set_thread_parent` /
`reset_thread_parent` and `send_response`; nbclient's own `update-display-id` test notebook
(tests/files, from jupyter/nbclient) runs under nbclient with the outputs nbclient expects.
Also the texts clients compare: stdin refused as ipykernel words it, and `jupyter run`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
import pytest
from kernel_driver import Driver, code
from nbclient import NotebookClient

if TYPE_CHECKING:
    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager

pytestmark = pytest.mark.timeout(120)

FILES = Path(__file__).parent / "files"


@pytest.fixture(scope="module")
def driver(kernel: tuple[KernelManager, BlockingKernelClient]) -> Driver:
    d = Driver(kernel[1])
    d.run("import threading\nip = get_ipython()\nk = ip.kernel")
    return d


def of_type(d: Driver, msg_id: str, msg_type: str) -> list[dict[str, Any]]:
    """The iopub messages of `msg_type` whose parent is `msg_id`, in arrival order."""
    return [m for _, m in d.got(msg_id).iopub if m["msg_type"] == msg_type]


def test_session_send_on_iopub_goes_to_the_cell_in_order(driver: Driver) -> None:
    cell = driver.execute(
        code(
            """
            display("above")
            msg = k.session.send(
                k.iopub_socket,
                "display_data",
                {"data": {"text/plain": "sent"}, "metadata": {}, "transient": {}},
                parent=ip.parent_header,
            )
            display("below")
            print(sorted(msg), msg["parent_header"]["msg_id"] == ip.parent_header["msg_id"])
            """
        )
    )
    assert driver.reply(cell)["content"]["status"] == "ok", driver.errors(cell)
    shown = [m["content"]["data"]["text/plain"] for m in of_type(driver, cell, "display_data")]
    assert shown == ["'above'", "sent", "'below'"]
    keys = ["content", "header", "metadata", "msg_id", "msg_type", "parent_header", "tracker"]
    assert driver.stdout(cell) == f"{keys} True\n"


def test_send_response_and_buffers(driver: Driver) -> None:
    cell = driver.execute(
        code(
            """
            k.send_response(
                k.iopub_socket,
                "display_data",
                {"data": {"text/plain": "response"}, "metadata": {}, "transient": {}},
                buffers=[b"\\x00raw"],
            )
            """
        )
    )
    assert driver.reply(cell)["content"]["status"] == "ok", driver.errors(cell)
    (msg,) = of_type(driver, cell, "display_data")
    assert msg["content"]["data"] == {"text/plain": "response"}
    assert [bytes(b) for b in msg["buffers"]] == [b"\x00raw"]


def test_parent_header_is_the_running_cells_in_each_context(driver: Driver) -> None:
    """A `##thread` cell and a main-shell cell run at once; each sees its own request."""
    driver.run("both = threading.Barrier(2)")
    # A function's locals: the two cells share the user namespace.
    check = code(
        """
        {first}
        def report():
            both.wait(10)
            p = ip.parent_header
            same = ip.get_parent() == p
            print(p["header"]["msg_id"], p["msg_type"], k.get_parent()["msg_id"], same)
        report()
        """
    )
    thread_cell = driver.execute(check.format(first="##thread"))
    main_cell = driver.execute(check.format(first="pass"))
    for cell in (thread_cell, main_cell):
        assert driver.reply(cell)["content"]["status"] == "ok", driver.errors(cell)
        assert driver.stdout(cell) == f"{cell} execute_request {cell} True\n"


def test_set_thread_parent_sends_output_elsewhere_until_reset(driver: Driver) -> None:
    first = driver.execute("first = ip.parent_header")
    driver.reply(first)
    cell = driver.execute(
        code(
            """
            def work():
                tokens = ip.set_thread_parent(first)
                print("thread: to the first cell")
                ip.reset_thread_parent(tokens)
                print("thread: back to the latest cell")

            t = threading.Thread(target=work)
            t.start()
            t.join(10)
            tokens = ip.set_thread_parent(first)
            print("cell: to the first cell")
            ip.reset_thread_parent(tokens)
            print("cell: its own")
            """
        )
    )
    assert driver.reply(cell)["content"]["status"] == "ok", driver.errors(cell)
    driver.wait_stdout(first, "cell: to the first cell")
    assert driver.stdout(first) == "thread: to the first cell\ncell: to the first cell\n"
    assert driver.stdout(cell) == "thread: back to the latest cell\ncell: its own\n"


def test_shell_set_parent_binds_a_thread(driver: Driver) -> None:
    first = driver.execute("first = ip.parent_header")
    driver.reply(first)
    cell = driver.execute(
        code(
            """
            def work():
                ip.set_parent(first)
                print("bound:", ip.parent_header["header"]["msg_id"] == first["msg_id"])

            t = threading.Thread(target=work)
            t.start()
            t.join(10)
            """
        )
    )
    assert driver.reply(cell)["content"]["status"] == "ok", driver.errors(cell)
    assert driver.wait_stdout(first, "bound") == "bound: True\n"
    assert driver.stdout(cell) == ""


def test_kernel_set_parent_takes_a_foreign_header(driver: Driver) -> None:
    cell = driver.execute(
        code(
            """
            def work():
                k.set_parent(None, {"msg_id": "made-up-1", "msg_type": "execute_request"})
                print("to a made-up request")
                display("shown there too")

            t = threading.Thread(target=work)
            t.start()
            t.join(10)
            """
        )
    )
    assert driver.reply(cell)["content"]["status"] == "ok", driver.errors(cell)
    driver.wait_stdout("made-up-1", "to a made-up request")
    (shown,) = of_type(driver, "made-up-1", "display_data")
    assert shown["content"]["data"]["text/plain"] == "'shown there too'"
    assert driver.stdout(cell) == ""


def test_sends_from_many_threads_all_arrive(driver: Driver) -> None:
    threads, each = 8, 25
    cell = driver.execute(
        code(
            f"""
            start = threading.Barrier({threads})
            parent = ip.parent_header

            def send(n):
                start.wait(10)
                for i in range({each}):
                    content = {{"data": {{"text/plain": f"{{n}}:{{i}}"}}, "metadata": {{}}}}
                    k.session.send(k.iopub_socket, "display_data", content, parent=parent)

            workers = [threading.Thread(target=send, args=(n,)) for n in range({threads})]
            for w in workers:
                w.start()
            for w in workers:
                w.join(10)
            """
        )
    )
    assert driver.reply(cell)["content"]["status"] == "ok", driver.errors(cell)
    expected = sorted(f"{n}:{i}" for n in range(threads) for i in range(each))
    driver.wait_until(
        lambda: len(of_type(driver, cell, "display_data")) >= len(expected), "every display"
    )
    shown = [m["content"]["data"]["text/plain"] for m in of_type(driver, cell, "display_data")]
    assert sorted(shown) == expected


def outputs(nb: Any) -> list[list[dict[str, Any]]]:
    """Each code cell's outputs: type, data and (for results) the execution count."""
    return [
        [
            {k: v for k, v in out.items() if k in ("output_type", "data", "execution_count")}
            for out in cell.outputs
        ]
        for cell in nb.cells
        if cell.cell_type == "code"
    ]


def test_nbclients_update_display_id_notebook(kernel: tuple[KernelManager, Any]) -> None:
    """The notebook builds displays with `session.send` and updates them by display id."""
    km, _ = kernel
    expected = nbformat.read(FILES / "update-display-id.ipynb", as_version=4)
    nb = nbformat.read(FILES / "update-display-id.ipynb", as_version=4)
    for cell in nb.cells:
        cell.outputs = []
    NotebookClient(nb, kernel_name=km.kernel_name, timeout=60, startup_timeout=60).execute()
    assert outputs(nb) == outputs(expected)


def test_stdin_refused_in_ipykernels_words(driver: Driver) -> None:
    """nbclient's test_disable_stdin compares the error's value."""
    for cell_code, caller in (
        ("input()", "raw_input"),
        ("import getpass; getpass.getpass()", "getpass"),
    ):
        cell = driver.execute(cell_code)
        content = driver.reply(cell)["content"]
        assert content["status"] == "error"
        assert content["ename"] == "StdinNotImplementedError"
        assert content["evalue"] == (
            f"{caller} was called, but this frontend does not support input requests."
        )


def test_jupyter_run_runs_a_script(kernel: tuple[KernelManager, Any], tmp_path: Path) -> None:
    """jupyter_client's runapp passes the script's name on to the kernel, which ignores it."""
    km, _ = kernel
    script = tmp_path / "script.py"
    script.write_text("import sys\nprint('ran', 6 * 7)\n", encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "jupyter_client.runapp", f"--kernel={km.kernel_name}", str(script)],
        capture_output=True,
        text=True,
        timeout=90,
        env=os.environ.copy(),
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "ran 42" in run.stdout
    assert f"async-kernel start: ignoring arguments: {script}" in run.stderr
