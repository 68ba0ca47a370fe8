"""`%gui qt` and `%matplotlib qt` over the protocol, on asyncio and trio (Qt offscreen).

Checks that the GUI runs are made from `##thread` cells: they wait on a worker thread while
the main shell is idle, which is exactly when the Qt event loop must run.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import TYPE_CHECKING

import pytest
from conftest import PLAIN_LOOP_CHECK, check_matplotlib_window, idle_cost, kernel_info_times
from kernel_driver import code

if TYPE_CHECKING:
    from conftest import GuiKernel

pytestmark = pytest.mark.timeout(120)

INTERRUPT_WITHIN = 2.0

SETUP = code("""
    %gui qt
    import threading
    import anyio
    from PyQt6 import QtCore
""")


def test_a_timer_fires_while_the_kernel_is_idle(qt_kernel: GuiKernel) -> None:
    _, d = qt_kernel
    d.run(SETUP)
    d.run("fired = threading.Event()\nQtCore.QTimer.singleShot(20, fired.set)")
    assert d.run("##thread\nprint(fired.wait(10))") == "True\n"
    assert d.run("print(get_ipython().active_eventloop)") == "qt\n"


def test_gui_in_a_thread_cell_names_the_main_thread(qt_kernel: GuiKernel) -> None:
    _, d = qt_kernel
    reply = d.reply(d.execute("##thread\nget_ipython().enable_gui('qt')"))["content"]
    assert reply["ename"] == "RuntimeError"
    assert "main thread" in reply["evalue"]


def test_the_gui_runs_while_a_cell_awaits(qt_kernel: GuiKernel) -> None:
    _, d = qt_kernel
    d.run(SETUP)
    out = d.run(
        code("""
        fired = threading.Event()
        QtCore.QTimer.singleShot(20, fired.set)
        print(await anyio.to_thread.run_sync(fired.wait, 10))
    """)
    )
    assert out == "True\n"


def test_the_gui_gets_turns_while_a_cell_never_waits(qt_kernel: GuiKernel) -> None:
    _, d = qt_kernel
    d.run(SETUP)
    out = d.run(
        code("""
        import time
        fired = threading.Event()
        QtCore.QTimer.singleShot(0, fired.set)
        end = time.monotonic() + 10
        while not fired.is_set() and time.monotonic() < end:
            await anyio.sleep(0)
        print(fired.is_set())
    """)
    )
    assert out == "True\n"


def test_async_work_started_by_a_gui_callback_runs_at_once(qt_kernel: GuiKernel) -> None:
    _, d = qt_kernel
    d.run(SETUP)
    d.run(
        code("""
        from async_kernel import Caller
        main = Caller()
        done = threading.Event()

        async def work():
            await anyio.sleep(0)
            done.set()

        QtCore.QTimer.singleShot(20, lambda: main.call_soon(work))
    """)
    )
    assert d.run("##thread\nprint(done.wait(10))") == "True\n"


def test_an_error_in_a_qt_callback_is_shown_and_the_kernel_lives(qt_kernel: GuiKernel) -> None:
    _, d = qt_kernel
    d.run(SETUP)
    first = d.execute(
        code("""
        def broken():
            raise ValueError("boom in a slot")

        later = threading.Event()
        QtCore.QTimer.singleShot(0, broken)
        QtCore.QTimer.singleShot(30, later.set)
    """)
    )
    d.reply(first)
    second = d.execute("##thread\nprint(later.wait(10))")
    d.reply(second)
    assert d.stdout(second) == "True\n"

    def shown() -> bool:
        return any("boom in a slot" in e for mid in (first, second) for e in d.errors(mid))

    d.wait_until(shown, "the slot's error on iopub")


def test_kernel_info_stays_fast_while_the_qt_loop_runs(qt_kernel: GuiKernel) -> None:
    _, d = qt_kernel
    d.run(SETUP)
    d.run(
        code("""
        ticks = []
        ticker = QtCore.QTimer()
        ticker.timeout.connect(lambda: ticks.append(1))
        ticker.start(5)
    """)
    )
    before = int(d.run("print(len(ticks))"))
    times = kernel_info_times(d)
    after = int(d.run("ticker.stop()\nprint(len(ticks))"))
    assert after > before  # the GUI ran all along
    assert statistics.median(times) < 0.020, sorted(times)


def test_gui_off_leaves_a_plain_loop_and_on_again_picks_up(qt_kernel: GuiKernel) -> None:
    km, d = qt_kernel
    d.run(SETUP)
    d.run("%gui")
    assert d.run(PLAIN_LOOP_CHECK) == "None []\n"
    d.run("fired = threading.Event()\nQtCore.QTimer.singleShot(0, fired.set)")
    assert d.run("##thread\nprint(fired.wait(0.5))") == "False\n"
    if sys.platform.startswith("linux"):
        pid = km.provisioner.process.pid  # type: ignore[union-attr]
        cpu, wakeups = idle_cost(pid, 1.0)
        assert cpu < 0.05, f"{cpu * 1e3:.1f} ms of CPU per second with %gui off"
        assert wakeups < 50, f"{wakeups:.0f} wake-ups per second with %gui off"
    d.run("%gui qt")
    assert d.run("##thread\nprint(fired.wait(10))") == "True\n"


def test_idle_cost_with_the_qt_loop_on_is_small(qt_kernel: GuiKernel) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    km, d = qt_kernel
    d.run(SETUP)
    d.run("##thread\nimport time; time.sleep(0.3)")  # the Qt start-up work is over
    cpu, wakeups = idle_cost(km.provisioner.process.pid, 1.0)  # type: ignore[union-attr]
    assert cpu < 0.05, f"{cpu * 1e3:.1f} ms of CPU per second with %gui qt"
    assert wakeups < 50, f"{wakeups:.0f} wake-ups per second with %gui qt"


@pytest.mark.parametrize("how", ["signal", "interrupt_request"])
def test_interrupt_while_the_qt_loop_runs(qt_kernel: GuiKernel, how: str) -> None:
    km, d = qt_kernel
    d.run(SETUP)
    mid = d.execute('print("waiting", flush=True)\nawait anyio.sleep(60)')
    d.wait_stdout(mid, "waiting")
    start = time.monotonic()
    d.interrupt(km, how)
    reply = d.reply(mid)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - start < INTERRUPT_WITHIN
    d.run("fired = threading.Event()\nQtCore.QTimer.singleShot(0, fired.set)")
    assert d.run("##thread\nprint(fired.wait(10))") == "True\n"


def test_matplotlib_qt_figure_draws_and_threads_keep_off_its_window(qt_kernel: GuiKernel) -> None:
    check_matplotlib_window(
        qt_kernel[1], "qt", ("fig.canvas.manager.window.isVisible()", "True"), "plt.figure()"
    )
