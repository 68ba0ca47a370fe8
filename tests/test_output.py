"""Output goes to the right cell: stream, display and comm messages over a real kernel process.

Each test runs on the asyncio kernel and on the trio kernel (the module-scoped `kernel` fixture).
Cells that must overlap are ordered with events and barriers inside the kernel, never with
sleeps; every wait has a timeout. The parent of an output is the request whose `msg_id` is its
`parent_header.msg_id` (the `Driver` files every message under it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from kernel_driver import Driver, code

if TYPE_CHECKING:
    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager

__all__ = ()

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def driver(kernel: tuple[KernelManager, BlockingKernelClient]) -> Driver:
    _, kc = kernel
    d = Driver(kc)
    d.run("import threading, time, os, sys, anyio\nfrom async_kernel import get_job")
    return d


@pytest.fixture(scope="module")
def backend(kernel: tuple[KernelManager, BlockingKernelClient]) -> str:
    km, _ = kernel
    return "trio" if km.kernel_name.endswith("trio") else "asyncio"


def of_type(d: Driver, msg_id: str, msg_type: str) -> list[dict[str, Any]]:
    """The iopub messages of `msg_type` whose parent is `msg_id`, in arrival order."""
    return [m for _, m in d.got(msg_id).iopub if m["msg_type"] == msg_type]


def stdout_messages(d: Driver, msg_id: str) -> list[tuple[int, dict[str, Any]]]:
    return [
        (n, m)
        for n, m in d.got(msg_id).iopub
        if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
    ]


def idle_number(d: Driver, msg_id: str) -> int:
    for n, m in d.got(msg_id).iopub:
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            return n
    raise AssertionError(f"no idle for {msg_id}")


# --- plain threads ---------------------------------------------------------------------------


def test_thread_output_goes_to_the_running_cell_then_to_the_latest(driver: Driver) -> None:
    d = driver
    a = d.execute(
        code("""
        lt_printed, lt_go, lt_done = threading.Event(), threading.Event(), threading.Event()
        def lt_work():
            print("lt while A runs")
            lt_printed.set()
            assert lt_go.wait(10)
            print("lt after B started")
            lt_done.set()
        threading.Thread(target=lt_work).start()
        assert lt_printed.wait(10)
        """)
    )
    assert d.reply(a)["content"]["status"] == "ok", d.errors(a)
    b = d.execute("lt_go.set()\nassert lt_done.wait(10)")
    assert d.reply(b)["content"]["status"] == "ok", d.errors(b)
    assert d.stdout(a) == "lt while A runs\n"
    assert d.stdout(b) == "lt after B started\n"


def test_starter_policy_keeps_thread_output_in_the_starting_cell(driver: Driver) -> None:
    d = driver
    d.run(
        code("""
        from async_kernel import get_kernel
        get_kernel().thread_parent_policy = "starter"
        """)
    )
    try:
        a = d.execute(
            code("""
            st_go, st_done = threading.Event(), threading.Event()
            def st_work():
                assert st_go.wait(10)
                print("st after B started")
                st_done.set()
            threading.Thread(target=st_work).start()
            """)
        )
        assert d.reply(a)["content"]["status"] == "ok", d.errors(a)
        b = d.execute("st_go.set()\nassert st_done.wait(10)")
        assert d.reply(b)["content"]["status"] == "ok", d.errors(b)
        d.wait_stdout(a, "st after B started")
        assert d.stdout(b) == ""
    finally:
        d.run('get_kernel().thread_parent_policy = "latest"')


def test_thread_pool_output_goes_to_the_cell_that_uses_it(driver: Driver) -> None:
    d = driver
    a = d.execute(
        code("""
        from concurrent.futures import ThreadPoolExecutor
        tp_pool = ThreadPoolExecutor(4)
        list(tp_pool.map(lambda i: print(f"pool A {i}\\n", end=""), range(8)))
        tp_pool.submit(lambda: None).result(10);
        """)
    )
    assert d.reply(a)["content"]["status"] == "ok", d.errors(a)
    # The same (already started) worker threads, used by the next cell.
    b = d.execute(
        'list(tp_pool.map(lambda i: print(f"pool B {i}\\n", end=""), range(8)))\ntp_pool.shutdown()'
    )
    assert d.reply(b)["content"]["status"] == "ok", d.errors(b)
    assert sorted(d.stdout(a).splitlines()) == [f"pool A {i}" for i in range(8)]
    assert sorted(d.stdout(b).splitlines()) == [f"pool B {i}" for i in range(8)]


@pytest.mark.parametrize(
    "call",
    [
        "await asyncio.to_thread(tt_work, 'to_thread')",
        "await anyio.to_thread.run_sync(tt_work, 'to_thread')",
        "await Caller().to_thread(tt_work, 'to_thread')",
    ],
    ids=["asyncio.to_thread", "anyio.to_thread", "Caller.to_thread"],
)
def test_to_thread_output_stays_with_its_cell(driver: Driver, backend: str, call: str) -> None:
    """While a later cell is the latest, a worker thread's output still goes to its caller's cell.

    A plain thread released at the same moment goes to the later cell: that is what the
    context's parent overrides.
    """
    if call.startswith("await asyncio") and backend != "asyncio":
        pytest.skip("asyncio.to_thread needs an asyncio loop")
    d = driver
    d.run(
        code("""
        import asyncio
        from async_kernel import Caller
        tt_go, tt_plain_done = threading.Event(), threading.Event()
        def tt_work(tag):
            assert tt_go.wait(10)
            print(f"{tag} output")
        def tt_plain():
            tt_work("plain thread")
            tt_plain_done.set()
        """)
    )
    a = d.execute(f'threading.Thread(target=tt_plain).start()\nprint("A started")\n{call}')
    d.wait_stdout(a, "A started")
    # `##task`: runs beside A, which holds the main shell's queue.
    b = d.execute("##task\ntt_go.set()\nassert tt_plain_done.wait(10)")
    assert d.reply(a)["content"]["status"] == "ok", d.errors(a)
    assert d.reply(b)["content"]["status"] == "ok", d.errors(b)
    assert d.stdout(a) == "A started\nto_thread output\n"
    d.wait_stdout(b, "plain thread output")
    assert d.stdout(b) == "plain thread output\n"


@pytest.mark.parametrize("how", ["set_thread_parent", "output_to"])
def test_pinning_a_plain_thread_to_an_earlier_cell(driver: Driver, how: str) -> None:
    d = driver
    pinned = (
        "tok = set_thread_parent(pin_job)\n    print('pinned')\n    reset_thread_parent(tok)"
        if how == "set_thread_parent"
        else "with output_to(pin_job):\n        print('pinned')"
    )
    a = d.execute(
        code(
            """
        from async_kernel import output_to, reset_thread_parent, set_thread_parent
        pin_job = get_job()
        pin_go, pin_done = threading.Event(), threading.Event()
        def pin_work():
            assert pin_go.wait(10)
            PINNED
            print("unpinned")
            pin_done.set()
        threading.Thread(target=pin_work).start()
        """
        ).replace("PINNED", pinned)
    )
    assert d.reply(a)["content"]["status"] == "ok", d.errors(a)
    b = d.execute("pin_go.set()\nassert pin_done.wait(10)")
    assert d.reply(b)["content"]["status"] == "ok", d.errors(b)
    d.wait_stdout(a, "pinned")
    assert d.stdout(a) == "pinned\n"
    assert d.stdout(b) == "unpinned\n"


def test_thread_cell_and_task_cell_never_mix(driver: Driver) -> None:
    d = driver
    n = 3000
    d.run("mix_barrier = threading.Barrier(2)")
    loop = code(f"""
        mix_barrier.wait(10)
        for i in range({n}):
            sys.stdout.write(f"TAG {{i}}\\n")
            if i % 50 == 0:
                time.sleep(0)
        """)
    t = d.execute("##thread\n" + loop.replace("TAG", "thread"))
    k = d.execute("##task\n" + loop.replace("TAG", "task"))
    assert d.reply(t, timeout=30)["content"]["status"] == "ok", d.errors(t)
    assert d.reply(k, timeout=30)["content"]["status"] == "ok", d.errors(k)
    assert d.stdout(t) == "".join(f"thread {i}\n" for i in range(n))
    assert d.stdout(k) == "".join(f"task {i}\n" for i in range(n))


# --- displays and comms ----------------------------------------------------------------------


def test_matplotlib_figure_from_a_worker_thread_shows_inline(driver: Driver) -> None:
    d = driver
    a = d.execute(
        code("""
        import matplotlib
        import matplotlib.pyplot as plt
        def mpl_work():
            fig, ax = plt.subplots()
            ax.plot([1, 2, 3])
            plt.show()
        mpl_thread = threading.Thread(target=mpl_work)
        mpl_thread.start()
        mpl_thread.join(30)
        print(matplotlib.get_backend())
        """)
    )
    assert d.reply(a)["content"]["status"] == "ok", d.errors(a)
    assert "matplotlib_inline" in d.stdout(a)
    figures = of_type(d, a, "display_data")
    assert len(figures) == 1
    assert "image/png" in figures[0]["content"]["data"]


def test_display_update_and_clear_from_a_worker_thread(driver: Driver) -> None:
    d = driver
    a = d.execute(
        code("""
        from IPython.display import clear_output, display, update_display
        def dt_work():
            print("before display")
            dt_handle = display("first", display_id=True)
            dt_handle.update("second")
            update_display("third", display_id=dt_handle.display_id)
            clear_output(wait=True)
            print("after clear")
            return dt_handle
        dt_pool_result = []
        dt_thread = threading.Thread(target=lambda: dt_pool_result.append(dt_work()))
        dt_thread.start()
        dt_thread.join(10)
        assert dt_pool_result
        """)
    )
    assert d.reply(a)["content"]["status"] == "ok", d.errors(a)
    kinds = [
        m["msg_type"]
        for _, m in d.got(a).iopub
        if m["msg_type"] in {"stream", "display_data", "update_display_data", "clear_output"}
    ]
    assert kinds == [
        "stream",
        "display_data",
        "update_display_data",
        "update_display_data",
        "clear_output",
        "stream",
    ]
    shown = of_type(d, a, "display_data")[0]["content"]
    display_id = shown["transient"]["display_id"]
    updates = of_type(d, a, "update_display_data")
    assert [u["content"]["data"]["text/plain"] for u in updates] == ["'second'", "'third'"]
    assert all(u["content"]["transient"]["display_id"] == display_id for u in updates)
    assert of_type(d, a, "clear_output")[0]["content"] == {"wait": True}
    assert d.stdout(a) == "before display\nafter clear\n"

    # A display updated later, from a thread pinned to the first cell while another cell runs.
    b = d.execute(
        code("""
        from async_kernel import output_to
        dt_job, dt_go, dt_done = get_job(), threading.Event(), threading.Event()
        dt_h = display("late display", display_id=True)
        def dt_late():
            assert dt_go.wait(10)
            with output_to(dt_job):
                dt_h.update("updated later")
            display("unpinned display")
            dt_done.set()
        threading.Thread(target=dt_late).start()
        """)
    )
    assert d.reply(b)["content"]["status"] == "ok", d.errors(b)
    c = d.execute("dt_go.set()\nassert dt_done.wait(10)")
    assert d.reply(c)["content"]["status"] == "ok", d.errors(c)
    update = d.wait_for(b, "update_display_data")[1]["content"]
    assert update["data"]["text/plain"] == "'updated later'"
    assert not of_type(d, c, "update_display_data")
    assert [m["content"]["data"]["text/plain"] for m in of_type(d, c, "display_data")] == [
        "'unpinned display'"
    ]


def test_comm_messages_from_eight_threads_each_arrive_once(driver: Driver) -> None:
    d = driver
    threads, per_thread = 8, 25
    a = d.execute(
        code(f"""
        from comm import create_comm
        cm = create_comm(target_name="async-kernel-test")
        cm_barrier = threading.Barrier({threads})
        def cm_send(i):
            cm_barrier.wait(10)
            for j in range({per_thread}):
                cm.send({{"i": i, "j": j}})
        cm_threads = [threading.Thread(target=cm_send, args=(i,)) for i in range({threads})]
        for t in cm_threads:
            t.start()
        for t in cm_threads:
            t.join(10)
        cm.close()
        cm.comm_id
        """)
    )
    assert d.reply(a)["content"]["status"] == "ok", d.errors(a)
    comm_id = of_type(d, a, "execute_result")[0]["content"]["data"]["text/plain"].strip("'")
    assert [m["content"]["comm_id"] for m in of_type(d, a, "comm_open")] == [comm_id]
    sent = [
        (m["content"]["data"]["i"], m["content"]["data"]["j"])
        for m in of_type(d, a, "comm_msg")
        if m["content"]["comm_id"] == comm_id
    ]
    assert sorted(sent) == [(i, j) for i in range(threads) for j in range(per_thread)]
    for i in range(threads):  # each thread's messages in the order it sent them
        assert [j for ii, j in sent if ii == i] == list(range(per_thread))
    assert [m["content"]["comm_id"] for m in of_type(d, a, "comm_close")] == [comm_id]


def test_incoming_comm_messages_are_handled_in_arrival_order(driver: Driver) -> None:
    d = driver
    a = d.execute(
        code("""
        import comm
        co_seen = []
        co_done = threading.Event()
        def co_target(c, open_msg):
            def on_msg(msg):
                co_seen.append(msg["content"]["data"]["i"])
                if len(co_seen) == 300:
                    co_done.set()
            c.on_msg(on_msg)
        comm.get_comm_manager().register_target("async-kernel-order", co_target)
        """)
    )
    assert d.reply(a)["content"]["status"] == "ok", d.errors(a)
    comm_id = "order-test-comm"
    opened = d.send(
        "comm_open", {"comm_id": comm_id, "target_name": "async-kernel-order", "data": {}}
    )
    d.wait_until(lambda: d.is_idle(opened), "the comm_open to be handled")
    for i in range(300):
        d.comm_msg(comm_id, {"i": i})
    # Waits off the loop: the comm messages are handled on this same main-thread loop.
    b = d.execute(
        "import anyio\nassert await anyio.to_thread.run_sync(co_done.wait, 30)\n"
        "co_seen == list(range(300))"
    )
    assert d.reply(b)["content"]["status"] == "ok", d.errors(b)
    assert of_type(d, b, "execute_result")[0]["content"]["data"]["text/plain"] == "True"


# --- volume ----------------------------------------------------------------------------------


def test_many_prints_arrive_complete_ordered_and_batched(driver: Driver) -> None:
    d = driver
    a = d.execute("for i in range(200_000):\n    print(i)")
    assert d.reply(a, timeout=60)["content"]["status"] == "ok", d.errors(a)
    assert d.stdout(a) == "".join(f"{i}\n" for i in range(200_000))
    assert len(stdout_messages(d, a)) <= 50


def test_ten_megabytes_in_one_cell(driver: Driver) -> None:
    d = driver
    lines = 10_000
    a = d.execute(f'for i in range({lines}):\n    print(f"{{i:08d}}" + "y" * 991)')
    assert d.reply(a, timeout=60)["content"]["status"] == "ok", d.errors(a)
    out = d.stdout(a)
    assert len(out) == 10_000_000
    assert out == "".join(f"{i:08d}" + "y" * 991 + "\n" for i in range(lines))


# --- after the reply -------------------------------------------------------------------------


def test_background_work_keeps_its_cell_after_the_reply(driver: Driver) -> None:
    """Work started by a cell through `output_to` or a Caller call writes after its reply."""
    d = driver
    a = d.execute(
        code("""
        from async_kernel import Caller
        from async_kernel import output_to
        bg_job = get_job()
        bg_go, bg_task_go = threading.Event(), anyio.Event()
        def bg_thread():
            assert bg_go.wait(10)
            with output_to(bg_job):
                print("late from a thread")
        def bg_worker():
            assert bg_go.wait(10)
            print("late from Caller.to_thread")
        async def bg_task():
            await bg_task_go.wait()
            print("late from Caller.call_soon")
        bg_plain = threading.Thread(target=bg_thread)
        bg_plain.start()
        bg_pendings = [Caller().to_thread(bg_worker), Caller().call_soon(bg_task)]
        """)
    )
    assert d.reply(a)["content"]["status"] == "ok", d.errors(a)
    a_idle = idle_number(d, a)
    b = d.execute(
        code("""
        bg_go.set()
        bg_task_go.set()
        for p in bg_pendings:
            await p
        bg_plain.join(10)
        print("B done")
        """)
    )
    assert d.reply(b)["content"]["status"] == "ok", d.errors(b)
    expected = {"late from a thread", "late from Caller.to_thread", "late from Caller.call_soon"}
    d.wait_until(lambda: set(d.stdout(a).splitlines()) == expected, "all late output of A")
    assert d.stdout(b) == "B done\n"
    assert all(n > a_idle for n, _ in stdout_messages(d, a))


# --- file-descriptor level ---------------------------------------------------------------------


def test_fd_output_arrives_before_the_reply(driver: Driver) -> None:
    d = driver
    a = d.execute(
        code("""
        os.system("echo hi from os.system")
        os.write(1, b"x from os.write\\n")
        os.write(2, b"e from os.write\\n")
        None
        """)
    )
    reply = d.reply(a)
    assert reply["content"]["status"] == "ok", d.errors(a)
    assert d.stdout(a) == "hi from os.system\nx from os.write\n"
    assert "e from os.write\n" in "".join(d.errors(a))
    # The reply travels on another socket, so its arrival order says nothing; the kernel's
    # header dates say when each message was made. Idle shares the stream's socket.
    made = reply["header"]["date"]
    idle = idle_number(d, a)
    streams = [(n, m) for n, m in d.got(a).iopub if m["msg_type"] == "stream"]
    assert len(streams) >= 2
    assert all(n < idle for n, _ in streams)
    assert all(m["header"]["date"] <= made for _, m in streams)
