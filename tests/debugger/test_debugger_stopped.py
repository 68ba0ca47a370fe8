"""A kernel whose cell is stopped at a breakpoint: it still answers, runs, and can interrupt.

Over a real kernel process, on asyncio and trio. While a main-shell cell waits at a
breakpoint the kernel answers kernel_info, completions and comms (the stopped thread handles
its own shell's comms: the stop is a safe point), other subshells and `##thread` cells run,
and an interrupt ends the stopped cell with `KeyboardInterrupt`, after which the debugger
works as before. `breakpoint()` stops in the attached debugger, and is
pdb over stdin when none is attached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from debug_client import DebugClient
from kernel_driver import TIMEOUT, Driver, code

if TYPE_CHECKING:
    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager

__all__ = ()

pytestmark = pytest.mark.timeout(120)

CELL = code("""
    def step(x):
        y = x + 1
        return y
    print("stepped", step(1))
""")


def stopped_cell(
    dbg: DebugClient, driver: Driver, *, header: dict[str, Any] | None = None, cell: str = CELL
) -> tuple[str, int]:
    """Start `cell` with a breakpoint in `step` and wait until it stops; (msg_id, thread id)."""
    dbg.break_at(cell, cell.splitlines().index("    y = x + 1") + 1)
    mark = dbg.mark()
    msg_id = driver.execute(cell, header=header)
    return msg_id, dbg.stopped_thread(mark)


def test_kernel_answers_while_a_cell_is_stopped(
    dbg: DebugClient, driver: Driver, subshell: str
) -> None:
    in_subshell = {"subshell_id": subshell}
    # Registered in the subshell, the target's comms belong to it (docs/widgets.md): its
    # thread handles them while the main shell is stopped.
    driver.run(
        code("""
        import comm
        def echo_target(c, open_msg):
            c.on_msg(lambda msg: c.send({"echo": msg["content"]["data"]["n"]}))
        comm.get_comm_manager().register_target("debugger-echo", echo_target)
        """),
        header=in_subshell,
    )
    msg_id, thread_id = stopped_cell(dbg, driver)
    info = driver.reply(driver.send("kernel_info_request", {}))["content"]
    assert info["status"] == "ok"
    completed = driver.reply(
        driver.send("complete_request", {"code": "threading.Eve", "cursor_pos": 13})
    )
    assert "Event" in completed["content"]["matches"]
    assert driver.reply(driver.send("comm_info_request", {}))["content"]["status"] == "ok"
    opened = driver.send(
        "comm_open",
        {"comm_id": "echo-1", "target_name": "debugger-echo", "data": {}},
        header=in_subshell,
    )
    driver.wait_until(lambda: driver.is_idle(opened), "the comm_open to be handled")
    sent = driver.send("comm_msg", {"comm_id": "echo-1", "data": {"n": 7}}, header=in_subshell)
    _, echoed = driver.wait_for(sent, "comm_msg")
    assert echoed["content"]["data"] == {"echo": 7}
    assert driver.got(msg_id).reply is None  # still stopped
    dbg.ok("continue", threadId=thread_id)
    assert driver.reply(msg_id)["content"]["status"] == "ok"


MAIN_SHELL_ECHO = code("""
    import comm
    def echo_target(c, open_msg):
        c.on_msg(lambda msg: c.send({"echo": msg["content"]["data"]["n"]}))
    comm.get_comm_manager().register_target("main-echo", echo_target)
    comm.get_comm_manager().register_target("main-echo-idle", echo_target, policy="owner_idle")
""")


def test_main_shell_comms_are_answered_while_its_cell_is_stopped(
    dbg: DebugClient, driver: Driver
) -> None:
    """The stop is a safe point: the stopped thread handles its shell's comm messages."""
    driver.run(MAIN_SHELL_ECHO)
    cell = code("""
        made = comm.create_comm(target_name="made-by-the-cell")
        made.on_msg(lambda msg: made.send({"made": msg["content"]["data"]["n"]}))
        def step(x):
            y = x + 1
            return y
        print("stepped", step(1))
    """)
    msg_id, thread_id = stopped_cell(dbg, driver, cell=cell)
    opened = driver.send("comm_open", {"comm_id": "main-1", "target_name": "main-echo", "data": {}})
    driver.wait_until(lambda: driver.is_idle(opened), "the comm_open to be handled")
    sent = driver.send("comm_msg", {"comm_id": "main-1", "data": {"n": 3}})
    _, echoed = driver.wait_for(sent, "comm_msg")
    assert echoed["content"]["data"] == {"echo": 3}
    comm_id = next(
        m["content"]["comm_id"] for _, m in driver.got(msg_id).iopub if m["msg_type"] == "comm_open"
    )
    sent = driver.send("comm_msg", {"comm_id": comm_id, "data": {"n": 4}})
    _, answered = driver.wait_for(sent, "comm_msg")
    assert answered["content"]["data"] == {"made": 4}
    assert driver.got(msg_id).reply is None  # still stopped
    assert dbg.ok("debugInfo")["body"]["stoppedThreads"] == [thread_id]
    dbg.ok("continue", threadId=thread_id)
    assert driver.reply(msg_id)["content"]["status"] == "ok"
    assert driver.stdout(msg_id) == "stepped 2\n"


def test_owner_idle_comms_wait_for_a_stopped_cell(dbg: DebugClient, driver: Driver) -> None:
    driver.run(MAIN_SHELL_ECHO)
    msg_id, thread_id = stopped_cell(dbg, driver)
    opened = driver.send(
        "comm_open", {"comm_id": "idle-1", "target_name": "main-echo-idle", "data": {}}
    )
    # A message that other requests overtake: kernel_info is answered, the comm_open waits.
    driver.reply(driver.send("kernel_info_request", {}))
    assert not driver.is_idle(opened)
    dbg.ok("continue", threadId=thread_id)
    assert driver.reply(msg_id)["content"]["status"] == "ok"
    driver.wait_until(lambda: driver.is_idle(opened), "the comm_open after the cell")
    sent = driver.send("comm_msg", {"comm_id": "idle-1", "data": {"n": 5}})
    _, echoed = driver.wait_for(sent, "comm_msg")
    assert echoed["content"]["data"] == {"echo": 5}


@pytest.mark.parametrize("where", ["main shell", "subshell"])
def test_interrupt_while_a_stopped_cell_handles_a_comm(
    dbg: DebugClient,
    driver: Driver,
    kernel: tuple[KernelManager, BlockingKernelClient],
    subshell: str,
    where: str,
) -> None:
    """An interrupt during a comm handler run at the stop ends the cell, not the handler."""
    stopped = {"subshell_id": driver.create_subshell()} if where == "subshell" else None
    target = f"slow-{where.replace(' ', '-')}"
    driver.run(
        code(f"""
        import comm, threading
        handling, release = threading.Event(), threading.Event()
        def slow_target(c, open_msg):
            def on_msg(msg):
                handling.set()
                release.wait(30)
                c.send({{"handled": msg["content"]["data"]["n"]}})
            c.on_msg(on_msg)
        comm.get_comm_manager().register_target({target!r}, slow_target)
        """),
        header=stopped,
    )
    msg_id, _ = stopped_cell(dbg, driver, header=stopped)
    opened = driver.send("comm_open", {"comm_id": target, "target_name": target, "data": {}})
    driver.wait_until(lambda: driver.is_idle(opened), "the comm_open to be handled")
    sent = driver.send("comm_msg", {"comm_id": target, "data": {"n": 6}})
    in_subshell = {"subshell_id": subshell}
    assert driver.run("print(handling.wait(30))", header=in_subshell) == "True\n"
    driver.interrupt(kernel[0], "message")
    driver.run("release.set()", header=in_subshell)
    _, handled = driver.wait_for(sent, "comm_msg")
    assert handled["content"]["data"] == {"handled": 6}
    reply = driver.reply(msg_id)["content"]
    assert (reply["status"], reply["ename"]) == ("error", "KeyboardInterrupt")
    assert dbg.ok("debugInfo")["body"]["stoppedThreads"] == []


def test_other_cells_run_while_one_is_stopped(
    dbg: DebugClient, driver: Driver, subshell: str
) -> None:
    msg_id, thread_id = stopped_cell(dbg, driver)
    assert driver.run("print('subshell ran')", header={"subshell_id": subshell}) == (
        "subshell ran\n"
    )
    assert driver.run("##thread\nprint('thread cell ran')") == "thread cell ran\n"
    assert driver.got(msg_id).reply is None
    dbg.ok("continue", threadId=thread_id)
    assert driver.reply(msg_id)["content"]["status"] == "ok"


def test_debug_requests_do_not_make_a_running_cell_look_idle(
    dbg: DebugClient, driver: Driver
) -> None:
    """Each debug_request's busy and idle name it as their parent, not the running cell.

    JupyterLab and jupyter_server leave status messages whose parent is a debug_request out
    of the kernel's status (their `untracked_message_types`), so the notebook stays busy.
    """
    msg_id, thread_id = stopped_cell(dbg, driver)
    asked = dbg.send("stackTrace", {"threadId": thread_id})
    dbg.reply(asked)
    states = [
        (m["content"]["execution_state"], m["parent_header"]["msg_type"])
        for _, m in driver.got(asked).iopub
        if m["msg_type"] == "status"
    ]
    assert states == [("busy", "debug_request"), ("idle", "debug_request")]
    assert not driver.is_idle(msg_id)  # the cell's own idle has not come
    dbg.ok("continue", threadId=thread_id)
    assert driver.reply(msg_id)["content"]["status"] == "ok"


@pytest.mark.parametrize("how", ["message", "signal"])
def test_interrupt_ends_a_stopped_cell(
    dbg: DebugClient,
    driver: Driver,
    kernel: tuple[KernelManager, BlockingKernelClient],
    how: str,
) -> None:
    msg_id, _ = stopped_cell(dbg, driver)
    driver.interrupt(kernel[0], how)
    reply = driver.reply(msg_id)["content"]
    assert reply["status"] == "error"
    assert reply["ename"] == "KeyboardInterrupt"
    assert dbg.ok("debugInfo")["body"]["stoppedThreads"] == []
    # The debugger still works: the next run stops again and goes on.
    msg_id, thread_id = stopped_cell(dbg, driver)
    dbg.ok("continue", threadId=thread_id)
    assert driver.reply(msg_id)["content"]["status"] == "ok"
    assert driver.stdout(msg_id) == "stepped 2\n"


def test_interrupt_ends_a_stopped_thread_cell(
    dbg: DebugClient, driver: Driver, kernel: tuple[KernelManager, BlockingKernelClient]
) -> None:
    cell = "##thread\n" + CELL
    msg_id, _ = stopped_cell(dbg, driver, cell=cell)
    driver.interrupt(kernel[0], "message")
    reply = driver.reply(msg_id)["content"]
    assert (reply["status"], reply["ename"]) == ("error", "KeyboardInterrupt")
    assert dbg.ok("debugInfo")["body"]["stoppedThreads"] == []
    msg_id, thread_id = stopped_cell(dbg, driver, cell=cell)
    dbg.ok("continue", threadId=thread_id)
    assert driver.reply(msg_id)["content"]["status"] == "ok"


def test_breakpoint_builtin_stops_in_the_attached_debugger(
    dbg: DebugClient, driver: Driver
) -> None:
    cell = code("""
        value = 41
        breakpoint()
        value += 1
        print(value)
    """)
    mark = dbg.mark()
    msg_id = driver.execute(cell)
    thread_id = dbg.stopped_thread(mark)
    frame = dbg.frames(thread_id)[0]
    assert frame["name"] == "<module>"
    assert frame["line"] in (2, 3)  # at the call, or the line after it
    dbg.ok("continue", threadId=thread_id)
    assert driver.reply(msg_id)["content"]["status"] == "ok"
    assert driver.stdout(msg_id) == "42\n"


def test_breakpoint_builtin_without_a_debugger_is_pdb_over_stdin(
    driver: Driver, kernel: tuple[KernelManager, BlockingKernelClient]
) -> None:
    """No debugger attached (this test attaches none): `breakpoint()` is IPython's, pdb."""
    _, kc = kernel
    cell = "value = 1\nbreakpoint()\nprint('after', value)"
    msg_id = driver.send(
        "execute_request",
        {"code": cell, "silent": False, "store_history": False, "allow_stdin": True},
    )
    prompts: list[str] = []
    for answer in ("p value + 1", "c"):
        request = kc.stdin_channel.get_msg(timeout=TIMEOUT)
        assert request["msg_type"] == "input_request"
        prompts.append(request["content"]["prompt"])
        kc.input(answer)
    assert driver.reply(msg_id)["content"]["status"] == "ok"
    assert prompts[0].strip() == "(Pdb)"
    out = driver.stdout(msg_id)
    assert "2\n" in out
    assert out.endswith("after 1\n")
