"""Subshells (JEP 91) over a real kernel process, on asyncio and trio.

Subshells are created, listed and deleted on the control channel; an execute request runs in
one when its header names it (`header["subshell_id"]`). Concurrency is proven with events and
barriers that only a parallel run can release, never with sleeps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from kernel_driver import TIMEOUT, Driver, code

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager

__all__ = ()

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def driver(kernel: tuple[KernelManager, BlockingKernelClient]) -> Driver:
    _, kc = kernel
    d = Driver(kc)
    d.run("import threading, time")
    return d


def control(d: Driver, msg_type: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send a control request, wait for its reply and idle; return the reply content."""
    msg_id = d.send(msg_type, content or {}, channel="control")
    return d.reply(msg_id)["content"]


def create(d: Driver) -> str:
    content = control(d, "create_subshell_request")
    assert content["status"] == "ok", content
    subshell_id = content["subshell_id"]
    assert isinstance(subshell_id, str)
    assert subshell_id
    return subshell_id


def listed(d: Driver) -> list[str]:
    content = control(d, "list_subshell_request")
    assert content["status"] == "ok", content
    return content["subshell_id"]


def delete(d: Driver, subshell_id: str) -> None:
    content = control(d, "delete_subshell_request", {"subshell_id": subshell_id})
    assert content["status"] == "ok", content


def in_subshell(
    d: Driver,
    subshell_id: str,
    source: str,
    *,
    store_history: bool = True,
    allow_stdin: bool = False,
) -> str:
    """Send an execute request to a subshell; return its msg_id."""
    content = {
        "code": source,
        "silent": False,
        "store_history": store_history,
        "user_expressions": {},
        "allow_stdin": allow_stdin,
        "stop_on_error": True,
    }
    return d.send("execute_request", content, header={"subshell_id": subshell_id})


@pytest.fixture
def subshell(driver: Driver) -> Iterator[str]:
    """A fresh subshell, deleted afterwards."""
    subshell_id = create(driver)
    yield subshell_id
    delete(driver, subshell_id)


def ok(d: Driver, msg_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    content = d.reply(msg_id, timeout)["content"]
    assert content["status"] == "ok", (content, d.errors(msg_id))
    return content


def test_kernel_info_announces_subshells(driver: Driver) -> None:
    content = driver.reply(driver.send("kernel_info_request", {}))["content"]
    assert "kernel subshells" in content["supported_features"]


def test_create_list_delete(driver: Driver) -> None:
    d = driver
    before = listed(d)
    first, second = create(d), create(d)
    assert first != second
    assert listed(d) == [*before, first, second]
    delete(d, first)
    assert listed(d) == [*before, second]
    delete(d, second)
    assert listed(d) == before


def test_delete_unknown_subshell_is_an_error(driver: Driver) -> None:
    content = control(driver, "delete_subshell_request", {"subshell_id": "no-such-subshell"})
    assert content["status"] == "error"
    assert "no-such-subshell" in content["evalue"]


def test_reply_and_output_carry_the_subshell(driver: Driver, subshell: str) -> None:
    d = driver
    msg_id = in_subshell(d, subshell, "print('in a subshell')\nthreading.current_thread().name")
    reply = d.reply(msg_id)
    assert reply["content"]["status"] == "ok"
    assert reply["header"].get("subshell_id") == subshell
    assert d.stdout(msg_id) == "in a subshell\n"
    result = d.wait_for(msg_id, "execute_result")[1]["content"]["data"]["text/plain"]
    assert result != repr("MainThread")
    busy = [m for _, m in d.got(msg_id).iopub if m["msg_type"] == "status"]
    assert [m["content"]["execution_state"] for m in busy] == ["busy", "idle"]


def test_fd_output_of_a_lone_subshell_cell_lands_in_it(driver: Driver, subshell: str) -> None:
    """A descriptor does not say who wrote to it; with one cell running, that cell did."""
    d = driver
    msg_id = in_subshell(d, subshell, "import os\nos.system('echo from-the-subshell-fd')")
    assert d.reply(msg_id)["content"]["status"] == "ok"
    assert "from-the-subshell-fd" in d.wait_stdout(msg_id, "from-the-subshell-fd")


def test_subshell_magic_names_the_current_subshell(driver: Driver, subshell: str) -> None:
    d = driver
    msg_id = in_subshell(d, subshell, "info = %subshell\nprint(repr(info))")
    assert d.reply(msg_id)["content"]["status"] == "ok", d.errors(msg_id)
    text = d.stdout(msg_id)
    assert f"current: {subshell}" in text
    assert f"▶ {subshell}" in text
    main = d.execute("info = %subshell\nprint(repr(info))")
    assert d.reply(main)["content"]["status"] == "ok", d.errors(main)
    assert "current: main shell" in d.stdout(main)
    assert subshell in d.stdout(main)


def test_subshell_answers_while_the_main_shell_blocks(driver: Driver, subshell: str) -> None:
    d = driver
    d.run("ss_go = threading.Event()")
    # The main shell blocks in `time.sleep` until the subshell lets it go (or 10 s pass).
    main = d.execute(
        code("""
        print("main blocking", flush=True)
        ss_deadline = time.monotonic() + 10
        while not ss_go.is_set():
            assert time.monotonic() < ss_deadline, "the subshell never ran"
            time.sleep(0.01)
        """)
    )
    d.wait_stdout(main, "main blocking")
    sub = in_subshell(d, subshell, "print('subshell ran')")
    ok(d, sub)
    assert d.got(main).reply is None, "the main shell was not blocked"
    ok(d, in_subshell(d, subshell, "ss_go.set()"))
    ok(d, main)
    sub_n, main_n = d.reply_number(sub), d.reply_number(main)
    assert sub_n is not None
    assert main_n is not None
    assert sub_n < main_n
    assert d.stdout(sub) == "subshell ran\n"


def test_two_subshells_run_in_parallel(driver: Driver) -> None:
    d = driver
    first, second = create(d), create(d)
    try:
        d.run("ss_barrier = threading.Barrier(2)")
        # Each blocks in the barrier: both pass only if they run at the same time.
        a = in_subshell(d, first, "ss_barrier.wait(10)\nprint('first passed')")
        b = in_subshell(d, second, "ss_barrier.wait(10)\nprint('second passed')")
        ok(d, a)
        ok(d, b)
        assert d.stdout(a) == "first passed\n"
        assert d.stdout(b) == "second passed\n"
    finally:
        delete(d, first)
        delete(d, second)


def test_unknown_subshell_id_gets_busy_error_idle(driver: Driver) -> None:
    d = driver
    msg_id = in_subshell(d, "not-a-subshell", "print('must not run')")
    reply = d.reply(msg_id)["content"]
    assert reply["status"] == "error"
    assert "not-a-subshell" in reply["evalue"]
    states = [
        m["content"]["execution_state"] for _, m in d.got(msg_id).iopub if m["msg_type"] == "status"
    ]
    assert states == ["busy", "idle"]
    assert d.stdout(msg_id) == ""
    # The main shell is unaffected.
    assert d.run("print('still fine')") == "still fine\n"


def test_execution_count_is_per_subshell(driver: Driver, subshell: str) -> None:
    d = driver
    main_before = ok(d, d.execute("1"))["execution_count"]
    counts = [ok(d, in_subshell(d, subshell, "2"))["execution_count"] for _ in range(3)]
    assert counts == [1, 2, 3]
    main_after = ok(d, d.execute("3"))["execution_count"]
    assert main_after == main_before + 1
    fourth = in_subshell(d, subshell, "4")
    assert ok(d, fourth)["execution_count"] == 4
    assert d.wait_for(fourth, "execute_input")[1]["content"]["execution_count"] == 4
    # Without history, the count stays.
    assert ok(d, in_subshell(d, subshell, "5", store_history=False))["execution_count"] == 5
    assert ok(d, in_subshell(d, subshell, "6"))["execution_count"] == 5


def test_subshell_cells_leave_the_history_intact(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    """A subshell's cells, numbered on their own, do not collide with the main shell's history.

    A fresh kernel: its first history session holds the main shell's line 1, which a new
    subshell's first cell would also claim. Subshell cells stay out of IPython's history.
    """
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=kernel[0].kernel_name, startup_timeout=60)
    try:
        d = Driver(kc)
        cells = [d.execute("'main one'")]
        ok(d, cells[0])
        sub = create(d)
        cells.append(in_subshell(d, sub, "'in the subshell'"))
        ok(d, cells[1])
        cells.append(d.execute("get_ipython().history_manager.writeout_cache()\n'main two'"))
        ok(d, cells[2])
        printed = "".join(d.stdout(msg_id) + "".join(d.errors(msg_id)) for msg_id in cells)
        assert "not unique" not in printed
        history = d.reply(
            d.send("history_request", {"hist_access_type": "tail", "n": 10, "output": False})
        )["content"]["history"]
        inputs = [entry[2] for entry in history]
        assert "'main one'" in inputs
        assert "'in the subshell'" not in inputs
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_user_namespace_is_shared(driver: Driver, subshell: str) -> None:
    d = driver
    d.run("ns_value = 'from main'")
    assert ok(d, in_subshell(d, subshell, "ns_seen = ns_value\nns_value = 'from subshell'"))
    assert d.run("print(ns_seen, '/', ns_value)") == "from main / from subshell\n"


def test_input_from_a_subshell(
    driver: Driver, kernel: tuple[KernelManager, BlockingKernelClient], subshell: str
) -> None:
    d = driver
    _, kc = kernel
    msg_id = in_subshell(
        d,
        subshell,
        "ss_answer = input('your name? ')\nprint('hello', ss_answer)",
        allow_stdin=True,
    )
    request = kc.stdin_channel.get_msg(timeout=TIMEOUT)
    assert request["msg_type"] == "input_request"
    assert request["parent_header"]["msg_id"] == msg_id
    assert request["content"]["prompt"] == "your name? "
    kc.input("subshell user")
    ok(d, msg_id)
    assert d.stdout(msg_id) == "hello subshell user\n"


def test_main_shell_can_use_the_subshell_while_it_waits_for_input(
    driver: Driver, kernel: tuple[KernelManager, BlockingKernelClient], subshell: str
) -> None:
    """A subshell stays usable while the main shell blocks in `input()`."""
    d = driver
    _, kc = kernel
    msg_id = d.send(
        "execute_request",
        {
            "code": "ss_main_answer = input('main? ')",
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": True,
            "stop_on_error": True,
        },
    )
    request = kc.stdin_channel.get_msg(timeout=TIMEOUT)
    assert request["parent_header"]["msg_id"] == msg_id
    assert ok(d, in_subshell(d, subshell, "print('subshell free')"))
    kc.input("main user")
    ok(d, msg_id)
    assert d.run("print(ss_main_answer)") == "main user\n"
