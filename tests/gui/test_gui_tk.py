"""`%gui tk` and `%matplotlib tk` over the protocol, on asyncio and trio (under Xvfb).

As for Qt, the checks run in `##thread` cells, which wait while the main shell is idle.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

import pytest
from conftest import PLAIN_LOOP_CHECK, check_matplotlib_window, kernel_info_times
from kernel_driver import code

if TYPE_CHECKING:
    from conftest import GuiKernel

pytestmark = pytest.mark.timeout(120)

SETUP = code("""
    %gui tk
    import threading
    import tkinter as tk
""")


def test_a_tk_timer_fires_while_the_kernel_is_idle(tk_kernel: GuiKernel) -> None:
    _, d = tk_kernel
    d.run(SETUP)
    d.run("root = tk.Tk()\nfired = threading.Event()\nroot.after(20, fired.set)")
    assert d.run("##thread\nprint(fired.wait(10))") == "True\n"
    assert d.run("print(get_ipython().active_eventloop)") == "tk\n"


def test_a_tk_button_click_runs_its_command(tk_kernel: GuiKernel) -> None:
    _, d = tk_kernel
    d.run(SETUP)
    d.run(
        code("""
        window = tk.Toplevel()
        clicked = threading.Event()
        mapped = threading.Event()
        button = tk.Button(window, text="press", command=clicked.set)
        button.bind("<Map>", lambda event: mapped.set())
        button.pack()
    """)
    )
    assert d.run("##thread\nprint(mapped.wait(10))") == "True\n"
    # Queued (`when="tail"`): only Tk's event loop, run while the kernel idles, handles them.
    d.run(
        code("""
        for sequence in ("<Enter>", "<ButtonPress-1>", "<ButtonRelease-1>"):
            button.event_generate(sequence, when="tail")
    """)
    )
    assert d.run("##thread\nprint(clicked.wait(10))") == "True\n"
    d.run("window.destroy()")


def test_kernel_info_stays_fast_while_the_tk_loop_runs(tk_kernel: GuiKernel) -> None:
    _, d = tk_kernel
    d.run(SETUP)
    d.run(
        code("""
        ticker_root = tk.Tk()
        ticks = []
        def tick():
            ticks.append(1)
            ticker_root.after(5, tick)
        tick()
    """)
    )
    before = int(d.run("print(len(ticks))"))
    times = kernel_info_times(d)
    check = d.execute("ticker_root.destroy()\nprint(len(ticks), get_ipython().active_eventloop)")
    d.reply(check)
    after, loop = d.stdout(check).split()
    assert int(after) > before, (loop, d.errors(check))  # the GUI ran all along
    assert statistics.median(times) < 0.020, sorted(times)


def test_gui_off_stops_tk_and_on_again_picks_up(tk_kernel: GuiKernel) -> None:
    _, d = tk_kernel
    d.run(SETUP)
    d.run("%gui")
    assert d.run(PLAIN_LOOP_CHECK) == "None []\n"
    d.run("off_root = tk.Tk()\nfired = threading.Event()\noff_root.after(0, fired.set)")
    assert d.run("##thread\nprint(fired.wait(0.5))") == "False\n"
    d.run("%gui tk")
    assert d.run("##thread\nprint(fired.wait(10))") == "True\n"
    d.run("off_root.destroy()")


def test_matplotlib_tk_figure_draws_and_threads_keep_off_its_window(tk_kernel: GuiKernel) -> None:
    check_matplotlib_window(
        tk_kernel[1], "tk", ("fig.canvas.manager.window.winfo_ismapped()", "1"), "plt.subplots()"
    )
