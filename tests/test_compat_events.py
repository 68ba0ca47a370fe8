"""What ipykernel users rely on around every cell, over a real kernel on asyncio and trio.

IPython's events fire as in ipykernel in every run mode and in subshells; inline figures appear
at the end of the cell that drew them, also when cells run at once; cells are compiled under
ipykernel's hashed file names; context variables set at a cell's top level reach the next cell;
background tasks started by a cell outlive it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
from kernel_driver import TIMEOUT, Driver, code

from async_kernel.ipython._cellnames import HASH_SEED, murmur2_x86

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager

__all__ = ()

pytestmark = pytest.mark.timeout(120)

T = TIMEOUT
"""Seconds the kernel-side waits may take."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

RECORDERS = code(
    """
    def _pre_execute():
        print("pre_execute")
    def _pre_run_cell(info):
        print("pre_run_cell", repr(info.raw_cell), info.cell_id, info.silent,
              (info.cell_meta or {}).get("marker"))
    def _post_execute():
        print("post_execute")
    def _post_run_cell(result):
        print("post_run_cell", repr(result.info.raw_cell), result.execution_count,
              result.success, repr(result.result))
    _recorders = {"pre_execute": _pre_execute, "pre_run_cell": _pre_run_cell,
                  "post_execute": _post_execute, "post_run_cell": _post_run_cell}
    """
)


@pytest.fixture(scope="module")
def driver(kernel: tuple[KernelManager, BlockingKernelClient]) -> Driver:
    _, kc = kernel
    d = Driver(kc)
    d.run(RECORDERS)
    d.run("import threading, time, os, sys, contextvars, decimal")
    return d


@pytest.fixture
def backend(kernel: tuple[KernelManager, BlockingKernelClient]) -> str:
    km, _ = kernel
    return "trio" if km.kernel_name.endswith("trio") else "asyncio"


@pytest.fixture
def events(driver: Driver) -> Iterator[Driver]:
    """Record IPython's events of each cell on the cell's own stdout."""
    driver.run("for _e, _f in _recorders.items(): get_ipython().events.register(_e, _f)")
    try:
        yield driver
    finally:
        driver.run("for _e, _f in _recorders.items(): get_ipython().events.unregister(_e, _f)")


def control(d: Driver, msg_type: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    content = d.reply(d.send(msg_type, content or {}, channel="control"))["content"]
    assert content["status"] == "ok", content
    return content


@pytest.fixture
def subshell(driver: Driver) -> Iterator[str]:
    subshell_id = control(driver, "create_subshell_request")["subshell_id"]
    try:
        yield subshell_id
    finally:
        control(driver, "delete_subshell_request", {"subshell_id": subshell_id})


def count_of(d: Driver, msg_id: str) -> int:
    _, msg = d.wait_for(msg_id, "execute_input")
    return msg["content"]["execution_count"]


def expected_events(source: str, count: int, result: str, *, cell_id: str = "None") -> str:
    return (
        "pre_execute\n"
        f"pre_run_cell {source!r} {cell_id} False None\n"
        "post_execute\n"
        f"post_run_cell {source!r} {count} True {result}\n"
    )


# --- IPython's events ------------------------------------------------------------------------


@pytest.mark.parametrize("first_line", ["", "##queue", "##task", "##thread", "##blocking"])
def test_events_fire_around_a_cell_in_every_run_mode(events: Driver, first_line: str) -> None:
    source = f"{first_line}\n40 + 2" if first_line else "40 + 2"
    msg_id = events.execute(source, metadata={"cellId": "cell-7"})
    assert events.reply(msg_id)["content"]["status"] == "ok"
    expected = expected_events(source, count_of(events, msg_id), "42", cell_id="cell-7")
    assert events.stdout(msg_id) == expected


def test_events_fire_in_a_subshell(events: Driver, subshell: str) -> None:
    msg_id = events.execute("'sub'", header={"subshell_id": subshell})
    assert events.reply(msg_id)["content"]["status"] == "ok"
    assert count_of(events, msg_id) == 1  # a subshell counts on its own
    assert events.stdout(msg_id) == expected_events("'sub'", 1, "'sub'")


def test_pre_run_cell_sees_the_request_metadata(events: Driver) -> None:
    msg_id = events.execute("1", metadata={"marker": "from-the-client"})
    events.reply(msg_id)
    assert "pre_run_cell '1' None False from-the-client\n" in events.stdout(msg_id)


def test_a_silent_execute_fires_only_the_execute_events(events: Driver) -> None:
    content = {"code": "x_silent = 1", "silent": True, "store_history": False}
    msg_id = events.send("execute_request", content)
    assert events.reply(msg_id)["content"]["status"] == "ok"
    assert events.stdout(msg_id) == "pre_execute\npost_execute\n"


def test_an_empty_cell_fires_the_post_events_and_takes_no_count(events: Driver) -> None:
    empty = events.execute("  \n")
    events.reply(empty)
    after = events.execute("1")
    events.reply(after)
    assert count_of(events, after) == count_of(events, empty)
    # IPython gives an empty cell's result no execution count.
    assert events.stdout(empty) == "post_execute\npost_run_cell '  \\n' None True None\n"


def test_post_run_cell_gets_the_result_of_an_error(events: Driver) -> None:
    msg_id = events.execute("1 / 0")
    reply = events.reply(msg_id)["content"]
    assert reply["ename"] == "ZeroDivisionError"
    count = count_of(events, msg_id)
    assert f"post_run_cell '1 / 0' {count} False None\n" in events.stdout(msg_id)


@pytest.mark.parametrize(
    "wait", ["time.sleep(60)", "await anyio.sleep(60)"], ids=["blocking", "awaiting"]
)
def test_an_interrupted_cell_still_fires_the_post_events(events: Driver, wait: str) -> None:
    source = f"import anyio\nprint('waiting', flush=True)\n{wait}"
    msg_id = events.execute(source)
    events.wait_stdout(msg_id, "waiting")
    control(events, "interrupt_request")
    reply = events.reply(msg_id)["content"]
    assert (reply["status"], reply["ename"]) == ("error", "KeyboardInterrupt")
    count = count_of(events, msg_id)
    assert events.stdout(msg_id).endswith(
        f"post_execute\npost_run_cell {source!r} {count} False None\n"
    )


def test_concurrent_cells_each_get_their_own_result(events: Driver) -> None:
    events.run("gate = threading.Event()")
    slow_source = f"##thread\nassert gate.wait({T})\n'slow'"
    slow = events.execute(slow_source)
    events.wait_stdout(slow, "pre_run_cell")
    fast = events.execute("gate.set()\n'fast'")
    assert events.reply(fast)["content"]["status"] == "ok"
    assert events.reply(slow)["content"]["status"] == "ok"
    assert f"post_run_cell {slow_source!r} {count_of(events, slow)} True 'slow'" in (
        events.stdout(slow)
    )
    fast_out = events.stdout(fast)
    assert f"{count_of(events, fast)} True 'fast'" in fast_out
    assert "'slow'" not in fast_out


def test_errors_in_callbacks_are_shown_as_ipython_shows_them(driver: Driver) -> None:
    driver.run(
        code(
            """
            def _bad_post(result):
                raise ValueError("boom in post_run_cell")
            def _bad_pre():
                raise KeyError("boom in pre_execute")
            get_ipython().events.register("post_run_cell", _bad_post)
            get_ipython().events.register("pre_execute", _bad_pre)
            """
        )
    )
    try:
        ok = driver.execute("'still fine'")
        assert driver.reply(ok)["content"]["status"] == "ok"
        out = driver.stdout(ok)
        assert "Error in callback <function _bad_pre" in out
        assert "(for pre_execute), with arguments args (),kwargs {}:" in out
        assert "Error in callback <function _bad_post" in out
        assert "(for post_run_cell)" in out
        errors = [m["content"] for _, m in driver.got(ok).iopub if m["msg_type"] == "error"]
        assert [(e["ename"], e["evalue"]) for e in errors] == [
            ("KeyError", "'boom in pre_execute'"),
            ("ValueError", "boom in post_run_cell"),
        ]
        failed = driver.reply(driver.execute("1 / 0"))["content"]
        assert (failed["status"], failed["ename"]) == ("error", "ZeroDivisionError")
    finally:
        driver.run(
            'get_ipython().events.unregister("post_run_cell", _bad_post)\n'
            'get_ipython().events.unregister("pre_execute", _bad_pre)'
        )


# --- inline figures ----------------------------------------------------------------------------


def figures(d: Driver, msg_id: str) -> list[str]:
    """The `text/plain` of each PNG figure displayed in the cell `msg_id`."""
    return [
        m["content"]["data"]["text/plain"]
        for _, m in d.got(msg_id).iopub
        if m["msg_type"] == "display_data" and "image/png" in m["content"]["data"]
    ]


@pytest.fixture(scope="module")
def plotting(driver: Driver) -> Driver:
    driver.run("import matplotlib, matplotlib.pyplot as plt")
    return driver


def test_the_inline_backend_is_the_default(plotting: Driver) -> None:
    msg_id = plotting.execute("", user_expressions={"b": "matplotlib.get_backend()"})
    expression = plotting.reply(msg_id)["content"]["user_expressions"]["b"]
    # matplotlib names the backend by its module until `%matplotlib inline` calls it "inline".
    assert expression["data"]["text/plain"] in {
        "'inline'",
        "'module://matplotlib_inline.backend_inline'",
    }


def test_a_figure_shows_at_the_end_of_its_cell(plotting: Driver) -> None:
    msg_id = plotting.execute("plt.plot([1, 2, 3])")
    assert plotting.reply(msg_id)["content"]["status"] == "ok"
    assert figures(plotting, msg_id) == ["<Figure size 640x480 with 1 Axes>"]
    # Shown after the cell's result, and then closed: the next cell shows nothing.
    kinds = [m["msg_type"] for _, m in plotting.got(msg_id).iopub]
    assert kinds.index("execute_result") < kinds.index("display_data")
    later = plotting.execute("len(plt.get_fignums())")
    plotting.reply(later)
    assert figures(plotting, later) == []


def test_plt_show_shows_a_figure_once(plotting: Driver) -> None:
    msg_id = plotting.execute("plt.plot([1, 2]); plt.show()\nprint('after show')")
    plotting.reply(msg_id)
    assert figures(plotting, msg_id) == ["<Figure size 640x480 with 1 Axes>"]
    kinds = [m["msg_type"] for _, m in plotting.got(msg_id).iopub]
    assert kinds.index("display_data") < kinds.index("stream")


def test_the_matplotlib_inline_magic(plotting: Driver) -> None:
    msg_id = plotting.execute("%matplotlib inline\nplt.figure(figsize=(1, 1)); plt.plot([1])")
    assert plotting.reply(msg_id)["content"]["status"] == "ok"
    assert figures(plotting, msg_id) == ["<Figure size 100x100 with 1 Axes>"]


def test_a_figure_from_a_plain_thread_goes_to_the_cell(plotting: Driver) -> None:
    source = code(
        """
        def _draw():
            plt.figure(figsize=(4, 4)); plt.plot([1])
        _t = threading.Thread(target=_draw); _t.start(); _t.join()
        """
    )
    msg_id = plotting.execute(source)
    plotting.reply(msg_id)
    assert figures(plotting, msg_id) == ["<Figure size 400x400 with 1 Axes>"]


def draws_and_waits(size: int) -> str:
    """A cell that draws a figure of `size` inches, says so, and waits for `go`."""
    return code(
        f"""
        _fig, _ax = plt.subplots(figsize=({size}, {size})); _ax.plot([1, 2])
        print("drew")
        assert go.wait({T})
        """
    )


def other_cell_draws_and_ends(d: Driver) -> None:
    """While another cell's figure is open, a main-shell cell shows only its own figure."""
    msg_id = d.execute("_f, _a = plt.subplots(figsize=(3, 3)); _a.plot([3, 4]); None")
    assert d.reply(msg_id)["content"]["status"] == "ok"
    assert figures(d, msg_id) == ["<Figure size 300x300 with 1 Axes>"]


def test_a_thread_cell_keeps_its_figure(plotting: Driver) -> None:
    plotting.run("go = threading.Event()")
    waiting = plotting.execute("##thread\n" + draws_and_waits(2))
    plotting.wait_stdout(waiting, "drew")
    other_cell_draws_and_ends(plotting)
    plotting.run("go.set()")
    assert plotting.reply(waiting)["content"]["status"] == "ok"
    assert figures(plotting, waiting) == ["<Figure size 200x200 with 1 Axes>"]


def test_a_subshell_cell_keeps_its_figure(plotting: Driver, subshell: str) -> None:
    plotting.run("go = threading.Event()")
    waiting = plotting.execute(draws_and_waits(5), header={"subshell_id": subshell})
    plotting.wait_stdout(waiting, "drew")
    other_cell_draws_and_ends(plotting)
    plotting.run("go.set()")
    assert plotting.reply(waiting)["content"]["status"] == "ok"
    assert figures(plotting, waiting) == ["<Figure size 500x500 with 1 Axes>"]


def test_plt_show_leaves_a_running_cells_figure_alone(plotting: Driver) -> None:
    plotting.run("go = threading.Event()")
    waiting = plotting.execute("##thread\n" + draws_and_waits(2))
    plotting.wait_stdout(waiting, "drew")
    shows = plotting.execute("plt.figure(figsize=(3, 3)); plt.plot([1]); plt.show()")
    plotting.reply(shows)
    assert figures(plotting, shows) == ["<Figure size 300x300 with 1 Axes>"]
    plotting.run("go.set()")
    plotting.reply(waiting)
    assert figures(plotting, waiting) == ["<Figure size 200x200 with 1 Axes>"]


# --- cell file names ---------------------------------------------------------------------------


def cell_directory(d: Driver) -> str:
    msg_id = d.execute("", user_expressions={"dir": "__import__('tempfile').gettempdir()"})
    tmp = d.reply(msg_id)["content"]["user_expressions"]["dir"]["data"]["text/plain"]
    msg_id = d.execute("", user_expressions={"pid": "os.getpid()"})
    pid = d.reply(msg_id)["content"]["user_expressions"]["pid"]["data"]["text/plain"]
    return f"{tmp.strip(chr(39))}/ipykernel_{pid}"


def test_a_cell_is_compiled_under_its_hashed_name(driver: Driver) -> None:
    source = "print(sys._getframe().f_code.co_filename)"
    out = driver.run(source)
    assert out == f"{cell_directory(driver)}/{murmur2_x86(source, HASH_SEED)}.py\n"


def test_a_syntax_error_names_the_hashed_file(driver: Driver) -> None:
    msg_id = driver.execute("1 +")
    reply = driver.reply(msg_id)["content"]
    assert reply["ename"] == "SyntaxError"
    assert reply["evalue"] == "invalid syntax (1278102326.py, line 1)"  # as on ipykernel


def test_tracebacks_show_the_cells_source(driver: Driver) -> None:
    source = code(
        """
        def _fails():
            raise LookupError("from a function of the cell")
        _fails()
        """
    )
    msg_id = driver.execute(source)
    reply = driver.reply(msg_id)["content"]
    traceback = _ANSI.sub("", "\n".join(reply["traceback"]))
    assert 'raise LookupError("from a function of the cell")' in traceback
    assert f"Cell In[{reply['execution_count']}], line 3" in traceback
    assert driver.run("import inspect; print(inspect.getsource(_fails))").startswith("def _fails")


# --- context variables and background tasks ----------------------------------------------------


def test_a_context_variable_set_in_a_cell_is_seen_by_the_next(driver: Driver) -> None:
    driver.run("cv = contextvars.ContextVar('cv'); cv.set('first'); decimal.getcontext().prec = 7")
    assert driver.run("print(cv.get(), decimal.getcontext().prec)") == "first 7\n"
    driver.run("cv.set('second')")
    assert driver.run("print(cv.get())") == "second\n"


@pytest.mark.parametrize("first_line", ["##thread", "##task"])
def test_concurrent_cells_see_the_main_line_but_keep_their_own(
    driver: Driver, first_line: str
) -> None:
    driver.run("cv2 = contextvars.ContextVar('cv2'); cv2.set('main')")
    assert driver.run(f"{first_line}\nprint(cv2.get()); _ = cv2.set('mine')") == "main\n"
    assert driver.run("print(cv2.get())") == "main\n"


def test_a_subshell_has_its_own_context(driver: Driver, subshell: str) -> None:
    driver.run("cv3 = contextvars.ContextVar('cv3', default='unset')")
    first = driver.execute("_ = cv3.set('sub')", header={"subshell_id": subshell})
    driver.reply(first)
    second = driver.execute("print(cv3.get())", header={"subshell_id": subshell})
    driver.reply(second)
    assert driver.stdout(second) == "sub\n"
    assert driver.run("print(cv3.get())") == "unset\n"


def test_the_kernels_own_variables_are_not_carried(driver: Driver) -> None:
    # A cell that (wrongly) sets the kernel's request variable must not send later output astray.
    earlier = driver.execute("from async_kernel import get_job\n_earlier = get_job()")
    driver.reply(earlier)
    driver.run("from async_kernel.wire._job import current_job\n_ = current_job.set(_earlier)")
    msg_id = driver.execute("print('mine')")
    driver.reply(msg_id)
    assert driver.stdout(msg_id) == "mine\n"
    assert driver.stdout(earlier) == ""


def test_asyncio_tasks_started_by_a_cell_keep_running(driver: Driver, backend: str) -> None:
    if backend != "asyncio":
        pytest.skip("asyncio's tasks need the asyncio backend")
    driver.run(
        code(
            """
            import asyncio
            _ev = asyncio.Event()
            async def _bg(name):
                await _ev.wait()
                return name
            _task = asyncio.create_task(_bg("created"))
            _future = asyncio.ensure_future(_bg("ensured"))
            """
        )
    )
    out = driver.run(
        f"print(_task.done(), _future.done()); _ev.set()\n"
        f"print(await asyncio.wait_for(asyncio.gather(_task, _future), {T}))"
    )
    assert out == "False False\n['created', 'ensured']\n"


def test_caller_tasks_started_by_a_cell_keep_running(driver: Driver) -> None:
    driver.run(
        code(
            """
            import anyio
            from async_kernel import Caller
            _go = anyio.Event()
            async def _bg():
                await _go.wait()
                return "still running"
            _pending = Caller().call_soon(_bg)
            """
        )
    )
    out = driver.run(
        f"print(_pending.done()); _go.set()\nwith anyio.fail_after({T}):\n    print(await _pending)"
    )
    assert out == "False\nstill running\n"


# --- a real client -----------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_name", ["async", "async-trio"])
def test_nbclient_gets_inline_figures_in_the_cells_that_drew_them(kernel_name: str) -> None:
    import nbformat
    from nbclient import NotebookClient

    sources = [
        "import matplotlib.pyplot as plt",
        "plt.plot([1, 2, 3])",
        "print('no figure here')",
        "##thread\nfig, ax = plt.subplots(figsize=(2, 2))\nax.plot([3, 1, 2]);",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(nb, kernel_name=kernel_name, timeout=60).execute()

    def pngs(cell: Any) -> list[str]:
        return [
            o["data"]["text/plain"]
            for o in cell.outputs
            if o["output_type"] == "display_data" and "image/png" in o["data"]
        ]

    assert [pngs(cell) for cell in nb.cells] == [
        [],
        ["<Figure size 640x480 with 1 Axes>"],
        [],
        ["<Figure size 200x200 with 1 Axes>"],
    ]
