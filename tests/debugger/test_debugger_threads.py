"""Breakpoints wherever a cell's code runs, and which threads the debugger shows as stopped.

Over a real kernel process, on asyncio and trio: a main-shell cell, an awaiting top-level
async cell, a `##thread` cell, a subshell cell, a `threading.Thread` a cell starts and a
`Caller.to_thread` call each stop at their breakpoint, in the thread they run in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from debug_client import DebugClient
from kernel_driver import Driver, code

if TYPE_CHECKING:
    pass

__all__ = ()

pytestmark = pytest.mark.timeout(120)


def thread_names(dbg: DebugClient) -> dict[int, str]:
    return {t["id"]: t["name"] for t in dbg.ok("threads")["body"]["threads"]}


def stop_and_continue(
    dbg: DebugClient,
    driver: Driver,
    cell: str,
    line: int,
    *,
    function: str,
    header: dict[str, Any] | None = None,
) -> str:
    """Run `cell` with a breakpoint on `line`; check it stops in `function`, then go on.

    Returns the name of the thread it stopped in.
    """
    path = dbg.break_at(cell, line)
    mark = dbg.mark()
    msg_id = driver.execute(cell, header=header)
    thread_id = dbg.stopped_thread(mark)
    frame = dbg.frames(thread_id)[0]
    assert (frame["name"], frame["line"], frame["source"]["path"]) == (function, line, path)
    assert dbg.ok("debugInfo")["body"]["stoppedThreads"] == [thread_id]
    name = thread_names(dbg)[thread_id]
    dbg.ok("continue", threadId=thread_id)
    reply = driver.reply(msg_id)["content"]
    assert reply["status"] == "ok", (reply, driver.errors(msg_id))
    dbg.ok("setBreakpoints", source={"path": path}, breakpoints=[])
    return name


def test_main_shell_cell(dbg: DebugClient, driver: Driver) -> None:
    cell = code("""
        def twice(x):
            y = x * 2
            return y
        twice(1)
    """)
    assert stop_and_continue(dbg, driver, cell, 2, function="twice") == "MainThread"


def test_awaiting_async_cell(dbg: DebugClient, driver: Driver) -> None:
    cell = code("""
        import anyio
        async def later(x):
            await anyio.sleep(0.01)
            y = x * 2
            return y
        print(await later(21))
    """)
    assert stop_and_continue(dbg, driver, cell, 5, function="later") == "MainThread"


def test_thread_cell(dbg: DebugClient, driver: Driver) -> None:
    cell = code("""
        ##thread
        def twice(x):
            y = x * 2
            return y
        twice(2)
    """)
    name = stop_and_continue(dbg, driver, cell, 3, function="twice")
    assert name.startswith("async_kernel_worker_"), name


def test_subshell_cell(dbg: DebugClient, driver: Driver, subshell: str) -> None:
    cell = code("""
        def twice(x):
            y = x * 2
            return y
        twice(3)
    """)
    name = stop_and_continue(
        dbg, driver, cell, 2, function="twice", header={"subshell_id": subshell}
    )
    assert name == f"subshell-{subshell[:8]}"


def test_thread_started_by_a_cell(dbg: DebugClient, driver: Driver) -> None:
    cell = code("""
        def job(x):
            y = x * 2
            return y
        worker = threading.Thread(target=job, args=(4,), name="users-thread")
        worker.start()
        worker.join()
    """)
    assert stop_and_continue(dbg, driver, cell, 2, function="job") == "users-thread"


def test_caller_to_thread(dbg: DebugClient, driver: Driver) -> None:
    cell = code("""
        from async_kernel import Caller
        def job(x):
            y = x * 2
            return y
        print(await Caller().to_thread(job, 5))
    """)
    name = stop_and_continue(dbg, driver, cell, 3, function="job")
    assert name.startswith("async_kernel_worker_"), name


def test_paused_threads_are_those_with_user_frames(
    dbg: DebugClient, driver: Driver, subshell: str
) -> None:
    """A pause stops the looping cell; idle kernel threads are never named as stopped."""
    driver.run("looping = threading.Event(); stop_looping = threading.Event()")
    cell = code("""
        ##thread
        print(threading.current_thread().name, flush=True)
        looping.set()
        n = 0
        while not stop_looping.is_set():
            n += 1
    """)
    msg_id = driver.execute(cell)
    name = driver.wait_stdout(msg_id, "\n").strip()
    driver.run("looping.wait(10)", header={"subshell_id": subshell})
    ids = {v: k for k, v in thread_names(dbg).items()}
    mark = dbg.mark()
    dbg.ok("pause", threadId=ids[name])
    dbg.wait_event("stopped", mark)
    stopped = dbg.ok("debugInfo")["body"]["stoppedThreads"]
    assert stopped == [ids[name]], (stopped, ids)
    assert dbg.frames(ids[name])[0]["name"] == "<module>"
    dbg.ok("continue", threadId=ids[name])
    driver.run("stop_looping.set()", header={"subshell_id": subshell})
    assert driver.reply(msg_id)["content"]["status"] == "ok"
    assert dbg.ok("debugInfo")["body"]["stoppedThreads"] == []
