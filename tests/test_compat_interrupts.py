"""An interrupt's traceback shows the user's frames only, as ipykernel's does, wherever it lands.

For the same cells ipykernel 7.4 shows, in the `error` output and in the execute_reply: a rule,
`KeyboardInterrupt ... Traceback (most recent call last)`, one entry per frame of the cell and
of the user code it called (`Cell In[N], line L` or `File path:L, in name()`), and
`KeyboardInterrupt: `. Never a frame of the kernel (the SIGINT handler, the interruptible
`time.sleep`, the output path of a `print`) nor of the event loop a cancelled `await` passed
through. Each cell prints a marker first and is interrupted once the marker arrived, so the
interrupt can land inside that `print` (the kernel then raises it at the next line); by signal
and by `interrupt_request`, in the main shell, a `##thread` cell and a subshell, on asyncio
and trio. The last test runs nbclient's `Interrupt.ipynb` check (a notebook cell interrupted
by nbclient's `interrupt_on_timeout`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
import pytest
from kernel_driver import TIMEOUT, Driver, code
from nbclient import NotebookClient

if TYPE_CHECKING:
    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager

__all__ = ()

pytestmark = pytest.mark.timeout(90)

MARKER = "cell is running"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CELL_ENTRY = re.compile(r"Cell In\[(\d+)\], line (\d+)(?:, in (\w+)\(\))?")
FILE_ENTRY = re.compile(r"File (.+):(\d+), in (\w+)\(\)")
ARROW = re.compile(r"-+> *\d+ (.*)")
FOREIGN = ("async_kernel", "anyio", "asyncio", "trio", "sniffio", "site-packages")
"""Text that no entry's location (its first line) may contain: where the kernel's and the event
loops' frames live."""
KERNEL_NAMES = ("async", "async-trio")

MODULE = code(
    """
    import time


    def spin():
        while True:
            pass


    def nap():
        time.sleep(60)
    """
)
"""A user module on `sys.path`, whose functions the cells call."""

DEFINITIONS = code(
    """
    def cell_nap():
        time.sleep(60)


    async def cell_await():
        await anyio.sleep(60)
    """
)
"""Functions defined in a cell, which other cells call."""

Frame = tuple[str, str]
"""An expected entry: the function's name (`<cell>` for the cell itself) and its arrow line."""

BODIES: dict[str, tuple[str, list[Frame]]] = {
    "time.sleep": ("time.sleep(60)", [("<cell>", "time.sleep(60)")]),
    "busy loop": ("while True:\n    pass", [("<cell>", "while True:")]),
    "anyio.sleep": ("await anyio.sleep(60)", [("<cell>", "await anyio.sleep(60)")]),
    "cell function": (
        "cell_nap()",
        [("<cell>", "cell_nap()"), ("cell_nap", "time.sleep(60)")],
    ),
    "cell coroutine": (
        "await cell_await()",
        [("<cell>", "await cell_await()"), ("cell_await", "await anyio.sleep(60)")],
    ),
    "module busy loop": (
        "user_module.spin()",
        [("<cell>", "user_module.spin()"), ("spin", "while True:")],
    ),
    "module time.sleep": (
        "user_module.nap()",
        [("<cell>", "user_module.nap()"), ("nap", "time.sleep(60)")],
    ),
}
"""What a cell does after printing the marker, and the frames its interrupt must show."""

BACKEND_AWAITS = {
    "async": ("asyncio.sleep", "await asyncio.sleep(60)"),
    "async-trio": ("trio.sleep", "await trio.sleep(60)"),
}
"""The backend's own sleep, for each kernel."""


@pytest.fixture(scope="module")
def driver(
    kernel: tuple[KernelManager, BlockingKernelClient], tmp_path_factory: pytest.TempPathFactory
) -> Driver:
    km, kc = kernel
    folder = tmp_path_factory.mktemp("user_code")
    (folder / "user_module.py").write_text(MODULE + "\n")
    d = Driver(kc)
    backend = "trio" if km.kernel_name == "async-trio" else "asyncio"
    d.run(f"import sys, time, anyio, {backend}\nsys.path.insert(0, {str(folder)!r})")
    d.run("import user_module")
    d.run(DEFINITIONS)
    return d


@pytest.fixture(scope="module")
def subshell(driver: Driver) -> str:
    return driver.create_subshell()


def run_interrupted(
    km: KernelManager, d: Driver, body: str, *, where: str, how: str, subshell_id: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run `body` after the marker, interrupt it; return the reply content and error outputs."""
    source = f'print("{MARKER}", flush=True)\n{body}'
    if where == "thread":
        source = "##thread\n" + source
    header = {"subshell_id": subshell_id} if where == "subshell" else None
    msg_id = d.execute(source, header=header)
    d.wait_stdout(msg_id, MARKER)
    d.interrupt(km, how)
    reply = d.reply(msg_id, timeout=TIMEOUT)["content"]
    errors = [m["content"] for _, m in d.got(msg_id).iopub if m["msg_type"] == "error"]
    return reply, errors


def entries(traceback: list[str]) -> list[str]:
    """The traceback's frame entries, without colours, after checking the lines around them."""
    plain = [ANSI.sub("", line) for line in traceback]
    assert len(plain) >= 3, plain
    assert plain[0] == "-" * 75, plain
    assert re.fullmatch(r"KeyboardInterrupt +Traceback \(most recent call last\)", plain[1]), plain
    assert plain[-1] == "KeyboardInterrupt: ", plain
    return plain[2:-1]


def described(entry: str, count: int) -> Frame:
    """The function name and arrow line of one entry (checking a cell entry's count)."""
    first, *lines = entry.splitlines()
    if match := CELL_ENTRY.fullmatch(first):
        name = match[3] or "<cell>"
        if name == "<cell>":
            assert int(match[1]) == count, (first, count)
    elif match := FILE_ENTRY.fullmatch(first):
        assert Path(match[1]).name == "user_module.py", first
        name = match[3]
    else:
        pytest.fail(f"an entry that is neither the cell's nor user code's: {entry!r}")
    arrows = [m[1].strip() for line in lines if (m := ARROW.fullmatch(line))]
    assert len(arrows) == 1, entry
    return name, arrows[0]


def assert_user_frames(
    reply: dict[str, Any], errors: list[dict[str, Any]], expected: list[Frame]
) -> None:
    """The reply and the one `error` output show the same traceback, of exactly `expected`."""
    assert reply["status"] == "error", reply
    assert (reply["ename"], reply["evalue"]) == ("KeyboardInterrupt", ""), reply
    assert len(errors) == 1, errors
    assert errors[0]["traceback"] == reply["traceback"]
    assert (errors[0]["ename"], errors[0]["evalue"]) == ("KeyboardInterrupt", "")
    found = entries(reply["traceback"])
    for entry in found:
        location = entry.partition("\n")[0]
        for foreign in FOREIGN:
            assert foreign not in location, f"{foreign!r} in the interrupt's traceback: {entry}"
    assert [described(entry, reply["execution_count"]) for entry in found] == expected


def answers(d: Driver, subshell_id: str | None) -> None:
    header = {"subshell_id": subshell_id} if subshell_id else None
    msg_id = d.execute("print('still here')", header=header)
    assert d.reply(msg_id)["content"]["status"] == "ok"


@pytest.mark.parametrize("how", ["signal", "message"])
@pytest.mark.parametrize("where", ["main", "thread", "subshell"])
@pytest.mark.parametrize("body", [*BODIES, "backend sleep"])
def test_interrupt_traceback_shows_only_user_frames(
    kernel: tuple[KernelManager, BlockingKernelClient],
    driver: Driver,
    subshell: str,
    body: str,
    where: str,
    how: str,
) -> None:
    km, _ = kernel
    if body == "backend sleep":
        call = BACKEND_AWAITS[km.kernel_name][1]
        source, expected = call, [("<cell>", call)]
    else:
        source, expected = BODIES[body]
    subshell_id = subshell if where == "subshell" else None
    reply, errors = run_interrupted(
        km, driver, source, where=where, how=how, subshell_id=subshell_id
    )
    assert_user_frames(reply, errors, expected)
    answers(driver, subshell_id)


@pytest.mark.parametrize("where", ["main", "thread", "subshell"])
def test_an_interrupt_that_lands_in_print_shows_the_cell_only(
    kernel: tuple[KernelManager, BlockingKernelClient], driver: Driver, subshell: str, where: str
) -> None:
    """A cell that runs the kernel's output code all the time (flushes, printing nothing)."""
    km, _ = kernel
    subshell_id = subshell if where == "subshell" else None
    body = "while True:\n    print(end='', flush=True)"
    reply, errors = run_interrupted(
        km, driver, body, where=where, how="signal", subshell_id=subshell_id
    )
    assert reply["status"] == "error", reply
    found = [described(entry, reply["execution_count"]) for entry in entries(reply["traceback"])]
    assert found in ([("<cell>", "while True:")], [("<cell>", "print(end='', flush=True)")])
    assert errors[0]["traceback"] == reply["traceback"]
    answers(driver, subshell_id)


def test_cells_awaiting_on_the_main_loop_are_interrupted_while_another_one_blocks(
    kernel: tuple[KernelManager, BlockingKernelClient], driver: Driver
) -> None:
    """`##task` cells: one awaits, one blocks the main thread; both end with their own frames."""
    km, _ = kernel
    d = driver
    waiting = d.execute(f'##task\nprint("{MARKER}", flush=True)\nawait anyio.sleep(60)')
    d.wait_stdout(waiting, MARKER)
    busy = d.execute(f'##task\nprint("{MARKER}", flush=True)\nwhile True:\n    pass')
    d.wait_stdout(busy, MARKER)
    km.interrupt_kernel()
    # Both replies first, then the checks: a failure then names the cell it is about.
    cells = {"busy": (busy, "while True:"), "waiting": (waiting, "await anyio.sleep(60)")}
    replies = {
        name: d.reply(msg_id, timeout=TIMEOUT)["content"] for name, (msg_id, _) in cells.items()
    }
    for name, (msg_id, line) in cells.items():
        errors = [m["content"] for _, m in d.got(msg_id).iopub if m["msg_type"] == "error"]
        try:
            assert_user_frames(replies[name], errors, [("<cell>", line)])
        except AssertionError as e:
            e.add_note(f"in the reply of the {name} cell; the replies: {replies}")
            raise
    answers(d, None)


def test_a_sigint_that_another_thread_receives_interrupts_the_awaiting_cell(
    driver: Driver, subshell: str
) -> None:
    """The main loop sleeps in `select()`; the signal lands in a subshell's thread."""
    d = driver
    cell = d.execute(f'print("{MARKER}", flush=True)\nawait anyio.sleep(60)')
    d.wait_stdout(cell, MARKER)
    sender = d.execute(
        "import signal, threading\nsignal.pthread_kill(threading.get_ident(), signal.SIGINT)",
        header={"subshell_id": subshell},
    )
    d.reply(sender)  # interrupted too, unless it ended first: the interrupt is for all cells
    reply = d.reply(cell, timeout=TIMEOUT)["content"]
    errors = [m["content"] for _, m in d.got(cell).iopub if m["msg_type"] == "error"]
    assert_user_frames(reply, errors, [("<cell>", "await anyio.sleep(60)")])


@pytest.mark.parametrize("kernel_name", KERNEL_NAMES)
def test_nbclient_interrupt_on_timeout(kernel_name: str) -> None:
    """nbclient's `Interrupt.ipynb` check: a cell interrupted on timeout, then the next one runs.

    The notebook is run as nbclient's own test runs it (timeout, `interrupt_on_timeout`,
    `allow_errors`, an 80-column terminal); its outputs must equal the stored ones, with the
    cell's name normalised as nbclient normalises it.
    """
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("while True: continue"),
        nbformat.v4.new_code_cell('print("done")'),
    ]
    client = NotebookClient(
        nb, kernel_name=kernel_name, timeout=2, interrupt_on_timeout=True, allow_errors=True
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLUMNS", "80")
        mp.setenv("LINES", "24")
        client.execute()
    first, second = nb.cells
    assert first.execution_count == 1
    assert second.execution_count == 2
    [error] = first.outputs
    assert error.output_type == "error"
    assert (error.ename, error.evalue) == ("KeyboardInterrupt", "")
    traceback = [
        re.sub(r"Cell In\[\d+\], line \d+", "<IPY-INPUT>", ANSI.sub("", line))
        for line in error.traceback
    ]
    assert traceback == [
        "-" * 75,
        "KeyboardInterrupt                         Traceback (most recent call last)",
        "<IPY-INPUT>\n----> 1 while True: continue\n",
        "KeyboardInterrupt: ",
    ]
    assert [(o.output_type, o.get("text")) for o in second.outputs] == [("stream", "done\n")]


def test_foreign_names_would_be_caught() -> None:
    """The checks above fail on the traceback the kernel showed before (a kernel frame)."""
    before = [
        "\x1b[31m" + "-" * 75 + "\x1b[39m",
        "KeyboardInterrupt                         Traceback (most recent call last)",
        "Cell In[5], line 2\n      1 print('x')\n----> 2 time.sleep(60)\n",
        f"File {sys.prefix}/async_kernel/requests/_interrupts.py:190, in Interrupter.on_sigint"
        "(self, signum, frame)\n--> 190     raise KeyboardInterrupt\n",
        "KeyboardInterrupt: ",
    ]
    reply = {
        "status": "error",
        "ename": "KeyboardInterrupt",
        "evalue": "",
        "traceback": before,
        "execution_count": 5,
    }
    error = {"ename": "KeyboardInterrupt", "evalue": "", "traceback": before}
    with pytest.raises(AssertionError, match="async_kernel"):
        assert_user_frames(reply, [error], [("<cell>", "time.sleep(60)")])
