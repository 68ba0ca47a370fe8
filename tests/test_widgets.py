"""A cell awaits an ipywidgets button click, over a real kernel (asyncio and trio).

The click comes with the subshell header JupyterLab's "comms over subshells" setting gives it
(each value of the setting); the handler runs where the button was made.

The cell creates a `Button` whose click handler sets an `anyio.Event` through the cell's own
`Caller` (`caller.call_direct(event.set)`), then awaits the event. The test plays the
front end: it finds the button's comm, checks that completion, inspection and kernel_info are
answered while the cell waits, and sends the click as a `comm_msg`. The cell must finish in
every run mode that can wait (`queue`, `task`, `thread`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from kernel_driver import Driver
from lab_comms import SETTINGS, LabComms

if TYPE_CHECKING:
    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager

CELL = """\
##{mode}
import threading
import anyio
import ipywidgets
from async_kernel import Caller

caller = Caller()
event = anyio.Event()
button = ipywidgets.Button(description="click me")
button.on_click(lambda _: caller.call_direct(event.set))
display(button)
print("waiting", button.model_id, threading.current_thread().name == "MainThread", flush=True)
with anyio.fail_after(30):
    await event.wait()
print("clicked")
"""


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("mode", ["queue", "task", "thread"])
def test_cell_awaits_button_click(
    kernel: tuple[KernelManager, BlockingKernelClient], mode: str, setting: str
) -> None:
    """The click arrives as a comm_msg while the cell awaits; the cell then finishes."""
    d = Driver(kernel[1])
    cell = d.execute(CELL.format(mode=mode))
    out = d.wait_stdout(cell, "waiting")
    _, comm_id, on_main = out.split()
    assert on_main == str(mode != "thread")
    opened = [
        m["content"]
        for _, m in d.got(cell).iopub
        if m["msg_type"] == "comm_open" and m["content"]["comm_id"] == comm_id
    ]
    assert len(opened) == 1
    assert opened[0]["target_name"] == "jupyter.widget"
    assert opened[0]["data"]["state"]["_model_name"] == "ButtonModel"

    # The kernel still serves the front end while the cell waits.
    complete = d.send("complete_request", {"code": "butt", "cursor_pos": 4})
    inspect = d.send("inspect_request", {"code": "button", "cursor_pos": 6, "detail_level": 0})
    info = d.send("kernel_info_request", {})
    assert "button" in d.reply(complete)["content"]["matches"]
    assert d.reply(inspect)["content"]["found"] is True
    assert d.reply(info)["content"]["status"] == "ok"
    assert d.got(cell).reply is None, "the cell finished before the click"

    lab = LabComms(d, setting)
    click = lab.custom(comm_id, {"event": "click"}, "jupyter.widget")
    reply = d.reply(cell)
    assert reply["content"]["status"] == "ok", d.errors(cell)
    assert d.stdout(cell).endswith("clicked\n")
    d.wait_until(lambda: d.is_idle(click), "idle after the click")
    assert d.errors(click) == []
