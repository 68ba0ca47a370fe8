"""The debug protocol over a real kernel process, on asyncio and trio (as ipykernel's suite).

`debug_request`s go on control; debugpy runs in the kernel. Each test that attaches detaches
again, so the tests of a module share one kernel. Stops are awaited as `stopped` events, never
with sleeps.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from debug_client import DebugClient
from kernel_driver import Driver, code

from async_kernel.ipython._cellnames import FILE_SUFFIX, HASH_SEED, murmur2_x86

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager

__all__ = ()

pytestmark = pytest.mark.timeout(120)

CELL = code("""
    def add(a, b):
        total = a + b
        return total

    result = add(2, 3)
    print("result", result)
""")


@pytest.fixture(scope="module")
def driver(kernel: tuple[KernelManager, BlockingKernelClient]) -> Driver:
    _, kc = kernel
    return Driver(kc)


@pytest.fixture
def dbg(driver: Driver) -> DebugClient:
    """A debug client on the module's kernel (not attached)."""
    return DebugClient(driver)


@pytest.fixture
def attached(dbg: DebugClient) -> Iterator[DebugClient]:
    """A debug client attached for one test, detached after it."""
    dbg.attach()
    try:
        yield dbg
    finally:
        dbg.disconnect()


def test_kernel_info_says_debugger(driver: Driver) -> None:
    content = driver.reply(driver.send("kernel_info_request", {}))["content"]
    assert content["debugger"] is True


def test_debug_info_names_cells_as_they_are_compiled(dbg: DebugClient, driver: Driver) -> None:
    """debugInfo's hash, seed, prefix and suffix give the file a cell is compiled under."""
    info = dbg.ok("debugInfo")["body"]
    assert info["hashMethod"] == "Murmur2"
    assert info["hashSeed"] == HASH_SEED
    assert info["tmpFileSuffix"] == FILE_SUFFIX
    assert info["tmpFilePrefix"].endswith(os.sep)
    cell = "import sys\nprint(sys._getframe().f_code.co_filename)"
    compiled = driver.run(cell).strip()
    expected = f"{info['tmpFilePrefix']}{murmur2_x86(cell, info['hashSeed'])}{FILE_SUFFIX}"
    assert compiled == expected
    dumped = dbg.ok("dumpCell", code=cell)["body"]["sourcePath"]
    assert dumped == expected
    source = dbg.ok("source", source={"path": dumped})["body"]["content"]
    assert source == cell
    assert os.stat(dumped).st_mode & 0o077 == 0  # readable by the user alone


def test_requests_before_attach_fail_clearly(dbg: DebugClient) -> None:
    info = dbg.ok("debugInfo")["body"]
    assert info["isStarted"] is False
    for command, arguments in [
        ("setBreakpoints", {"source": {"path": "/x.py"}, "breakpoints": []}),
        ("stackTrace", {"threadId": 1}),
        ("continue", {"threadId": 1}),
        ("configurationDone", {}),
        ("disconnect", {}),
        ("attach", {}),
    ]:
        response = dbg.request(command, **arguments)
        assert response["success"] is False, response
        assert response["command"] == command
        assert response["message"], response


def test_bad_input_gets_failed_responses(dbg: DebugClient, driver: Driver) -> None:
    """Malformed requests and unknown commands: success false and a message, kernel fine."""
    replies = [
        dbg.reply(driver.send("debug_request", {"nothing": "here"}, channel="control")),
        dbg.reply(driver.send("debug_request", {"command": 5, "seq": 1}, channel="control")),
        dbg.reply(dbg.send("debugInfo", seq="x")),
        dbg.reply(
            driver.send("debug_request", {"command": "x", "arguments": []}, channel="control")
        ),
        dbg.request("noSuchCommand"),
        dbg.request("dumpCell"),  # no code
        dbg.request("source", source={"path": "/no/such/file.py"}),
        dbg.request("richInspectVariables", variableName="not a name"),
        dbg.request("copyToGlobals", dstVariableName="a"),
    ]
    for response in replies:
        assert response["type"] == "response"
        assert response["success"] is False, response
        assert (response["status"], response["ename"]) == ("error", "DebugRequestError")
        assert isinstance(response["message"], str), response
        assert response["message"], response
    assert driver.run("print(1 + 1)") == "2\n"


def test_breakpoint_in_a_missing_file_fails(attached: DebugClient) -> None:
    response = attached.request(
        "setBreakpoints", source={"path": "/no/such/cell.py"}, breakpoints=[{"line": 1}]
    )
    assert response["success"] is False
    assert "dumpCell" in response["message"]


def test_attach_reports_started(attached: DebugClient) -> None:
    info = attached.ok("debugInfo")["body"]
    assert info["isStarted"] is True
    assert info["stoppedThreads"] == []


def test_set_breakpoints_are_listed_by_debug_info(attached: DebugClient) -> None:
    path = attached.break_at(CELL, 2)
    breakpoints = attached.ok("debugInfo")["body"]["breakpoints"]
    assert {"source": path, "breakpoints": [{"line": 2}]} in breakpoints
    attached.ok("setBreakpoints", source={"path": path}, breakpoints=[])
    assert attached.ok("debugInfo")["body"]["breakpoints"] == []


def test_stop_on_breakpoint_in_a_main_shell_cell(attached: DebugClient, driver: Driver) -> None:
    path = attached.break_at(CELL, 2)
    mark = attached.mark()
    msg_id = driver.execute(CELL)
    thread_id = attached.stopped_thread(mark)
    frames = attached.frames(thread_id)
    assert frames[0]["name"] == "add"
    assert frames[0]["line"] == 2
    assert frames[0]["source"]["path"] == path
    # Only the user's frames: the kernel's and the event loop's are left out.
    assert {f["source"]["path"] for f in frames} == {path}
    assert attached.locals(frames[0]["id"]) == {"a": "2", "b": "3"}
    assert thread_id in attached.ok("debugInfo")["body"]["stoppedThreads"]
    assert driver.got(msg_id).reply is None  # still stopped
    attached.ok("continue", threadId=thread_id)
    assert driver.reply(msg_id)["content"]["status"] == "ok"
    assert driver.stdout(msg_id) == "result 5\n"
    assert attached.ok("debugInfo")["body"]["stoppedThreads"] == []
    attached.ok("setBreakpoints", source={"path": path}, breakpoints=[])


def test_step_next_and_out(attached: DebugClient, driver: Driver) -> None:
    attached.break_at(CELL, 2)
    mark = attached.mark()
    msg_id = driver.execute(CELL)
    thread_id = attached.stopped_thread(mark)
    mark = attached.mark()
    attached.ok("next", threadId=thread_id)
    attached.wait_event("stopped", mark)
    frames = attached.frames(thread_id)
    assert (frames[0]["name"], frames[0]["line"]) == ("add", 3)
    assert attached.locals(frames[0]["id"])["total"] == "5"
    mark = attached.mark()
    attached.ok("stepOut", threadId=thread_id)
    attached.wait_event("stopped", mark)
    assert attached.frames(thread_id)[0]["name"] == "<module>"
    attached.ok("continue", threadId=thread_id)
    assert driver.reply(msg_id)["content"]["status"] == "ok"


def test_step_in(attached: DebugClient, driver: Driver) -> None:
    attached.break_at(CELL, 5)
    mark = attached.mark()
    msg_id = driver.execute(CELL)
    thread_id = attached.stopped_thread(mark)
    assert attached.frames(thread_id)[0]["name"] == "<module>"
    mark = attached.mark()
    attached.ok("stepIn", threadId=thread_id)
    attached.wait_event("stopped", mark)
    frame = attached.frames(thread_id)[0]
    assert (frame["name"], frame["line"]) == ("add", 2)
    attached.ok("continue", threadId=thread_id)
    assert driver.reply(msg_id)["content"]["status"] == "ok"


def test_evaluate_rich_inspect_and_copy_to_globals(attached: DebugClient, driver: Driver) -> None:
    attached.break_at(CELL, 3)
    mark = attached.mark()
    msg_id = driver.execute(CELL)
    thread_id = attached.stopped_thread(mark)
    frame_id = attached.frames(thread_id)[0]["id"]
    evaluated = attached.ok("evaluate", expression="total * 10", frameId=frame_id, context="repl")
    assert evaluated["body"]["result"] == "50"
    rich = attached.ok("richInspectVariables", variableName="total", frameId=frame_id)["body"]
    assert rich["data"]["text/plain"] == "5"
    attached.ok(
        "copyToGlobals", srcVariableName="total", dstVariableName="copied", srcFrameId=frame_id
    )
    attached.ok("continue", threadId=thread_id)
    assert driver.reply(msg_id)["content"]["status"] == "ok"
    assert driver.run("print(copied)") == "5\n"


def test_inspect_variables_without_a_stop(dbg: DebugClient, driver: Driver) -> None:
    """The variables panel while nothing is stopped: the user's globals, and their children."""
    driver.run("inspected = {'k': [1, 2]}\nclass Box: pass\nbox = Box(); box.inside = 7")
    variables = {v["name"]: v for v in dbg.ok("inspectVariables")["body"]["variables"]}
    assert variables["inspected"]["value"] == "{'k': [1, 2]}"
    assert variables["inspected"]["type"] == "dict"
    assert not {"In", "Out", "get_ipython", "_i", "__builtins__"} & variables.keys()
    children = dbg.ok("variables", variablesReference=variables["inspected"]["variablesReference"])
    (k,) = children["body"]["variables"]
    assert (k["name"], k["value"], k["evaluateName"]) == ("'k'", "[1, 2]", "inspected['k']")
    box = dbg.ok("variables", variablesReference=variables["box"]["variablesReference"])
    assert [(v["name"], v["value"]) for v in box["body"]["variables"]] == [("inside", "7")]
    rich = dbg.ok("richInspectVariables", variableName="inspected")["body"]
    assert rich["data"]["text/plain"] == "{'k': [1, 2]}"


def test_modules(dbg: DebugClient) -> None:
    body = dbg.ok("modules", startModule=0, moduleCount=100000)["body"]
    names = {m["name"] for m in body["modules"]}
    assert "async_kernel" in names
    assert body["totalModules"] >= len(body["modules"])
    page = dbg.ok("modules", startModule=0, moduleCount=5)["body"]["modules"]
    assert all(m["id"] < 5 for m in page)


def test_sequential_requests(attached: DebugClient) -> None:
    """Many requests sent at once: each reply answers its own request."""
    sent = {
        attached.send("debugInfo", {}): "debugInfo",
        attached.send("inspectVariables", {}): "inspectVariables",
        attached.send("threads", {}): "threads",
        attached.send("modules", {}): "modules",
        attached.send("noSuchCommand", {}): "noSuchCommand",
        attached.send("threads", {}): "threads",
    }
    for msg_id, command in sent.items():
        response = attached.reply(msg_id)
        assert response["command"] == command
        assert response["success"] is (command != "noSuchCommand")


def test_kernel_threads_are_hidden(attached: DebugClient) -> None:
    """The kernel's socket, control and machinery threads are not in the thread list."""
    names = {t["name"] for t in attached.ok("threads")["body"]["threads"]}
    assert "MainThread" in names
    hidden = {"Control", "Shell", "async_kernel_io", "async_kernel_control_io"}
    assert not names & hidden, names
    assert not any(name.startswith("async_kernel_") for name in names), names


def test_disconnect_and_attach_again(dbg: DebugClient, driver: Driver) -> None:
    for _ in range(2):
        dbg.attach()
        path = dbg.break_at(CELL, 2)
        mark = dbg.mark()
        msg_id = driver.execute(CELL)
        thread_id = dbg.stopped_thread(mark)
        dbg.ok("continue", threadId=thread_id)
        assert driver.reply(msg_id)["content"]["status"] == "ok"
        dbg.disconnect()
        assert dbg.ok("debugInfo")["body"] == {
            **dbg.ok("debugInfo")["body"],
            "isStarted": False,
            "breakpoints": [],
        }
        assert path
    # Detached: the breakpoints are gone, the cell runs through.
    assert driver.run(CELL) == "result 5\n"


def test_no_frontend_session_is_the_adapters_oldest(dbg: DebugClient, driver: Driver) -> None:
    """The kernel's anchor is debugpy's oldest session: the adapter writes to it, not to us.

    The adapter sends `debugpySockets` to the client of its oldest session whenever a client
    connects; a just-disconnected oldest session made that write fail and the adapter stop
    taking connections. With the anchor, no frontend ever gets that event.
    """
    mark = dbg.mark()
    for _ in range(3):
        dbg.attach()
        dbg.disconnect()
    dbg.attach()
    try:
        assert driver.run(CELL) == "result 5\n"
        dbg.mark()
        assert dbg.events("debugpySockets", mark) == []
        assert len(dbg.events("initialized", mark)) == 4
    finally:
        dbg.disconnect()


def test_without_debugpy_the_kernel_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """No debugpy: kernel_info says `debugger: false`, a debug_request fails with the fix."""
    import importlib.util
    from types import SimpleNamespace
    from typing import Any

    import anyio

    from async_kernel.requests._debugfiles import CellFiles
    from async_kernel.requests._debugger import Debugger
    from async_kernel.requests._handlers import RequestHandlers

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "debugpy" else real(name, *a)
    )
    cells = CellFiles("Murmur2", HASH_SEED, lambda: "/tmp/x/", FILE_SUFFIX, lambda c: c)
    none: Any = None
    debugger = Debugger(outbox=none, cells=cells, shell=none, run_sync=none)
    handlers = RequestHandlers(
        shell=none,
        outbox=none,
        interrupter=none,
        aborts=none,
        subshells=none,
        comms=none,
        timers=none,
        flush=lambda: None,
        stop=lambda: None,
        backend="asyncio",
        debugger=debugger,
    )
    assert handlers.kernel_info()["debugger"] is False
    job: Any = SimpleNamespace(content={"type": "request", "seq": 3, "command": "initialize"})
    response = anyio.run(handlers.debug_request, job)
    assert response["success"] is False
    assert response["request_seq"] == 3
    assert "pip install 'async-kernel[debug]'" in response["message"]
