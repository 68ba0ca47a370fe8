"""Twenty widgets made quickly while the frontend talks to the earlier ones, over a real kernel.

The test plays JupyterLab: as soon as a widget's `comm_open` arrives on iopub it sends what the
widget's view would send (ipympl's canvas: `initialized`, `send_image_mode`, `refresh`, `draw`;
an ipywidgets slider: a value update; a frontend-opened comm: messages of its own), with the
subshell headers of each "comms over subshells" setting, while the kernel is still making the
next widgets: in twenty queued cells (Run All), or in one cell's loop that sleeps a little
between them. Every widget must end in a consistent state: each handler ran on the main
thread, each figure was displayed once, in its own cell, and drew its image.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from kernel_driver import Driver, code
from lab_comms import SETTINGS, LabComms

if TYPE_CHECKING:
    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager

Kernel = tuple["KernelManager", "BlockingKernelClient"]

COUNT = 20
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
CANVAS_MESSAGES = ("initialized", "send_image_mode", "refresh", "draw")

IPYMPL_SETUP = code("""
    %matplotlib widget
    import threading, time, json
    import matplotlib.pyplot as plt
    from matplotlib._pylab_helpers import Gcf
    from ipympl.backend_nbagg import Canvas

    plt.close("all")
    handled = []
    if not hasattr(Canvas, "_unrecorded"):
        Canvas._unrecorded = Canvas._handle_message

        def _recording(self, obj, content, buffers):
            handled.append([self.model_id, content["type"], threading.current_thread().name])
            return Canvas._unrecorded(self, obj, content, buffers)

        Canvas._handle_message = _recording
""")
FIGURE_CELL = "fig = plt.figure(figsize=(2, 2))\nplt.plot([0, {i}, 1])\nprint(fig.canvas.model_id)"
FIGURE_LOOP = code(f"""
    for i in range({COUNT}):
        fig = plt.figure(figsize=(2, 2))
        plt.plot([0, i, 1])
        time.sleep(0.02)  # the earlier figures' messages are handled here
""")
IPYMPL_CHECK = code("""
    figs = [m.canvas for m in Gcf.get_all_fig_managers()]
    print(json.dumps({
        "figures": [c.model_id for c in figs],
        "initialized": [c.model_id for c in figs if not c.syncing_data_url],
        "handled": handled,
    }))
""")


class Frontend:
    """Answers each new widget of one model class as its view in JupyterLab would."""

    def __init__(self, d: Driver, lab: LabComms, model: str, answer: Any) -> None:
        self.d = d
        self.lab = lab
        self.model = model
        self.answer = answer
        self.opened: list[str] = []
        """The comm ids of the widgets of `model`, in the order they were opened."""
        self.sent: list[str] = []
        """The msg_ids of what it sent."""

    def respond(self, parents: list[str]) -> None:
        """Answer the widgets opened (on iopub) by the requests `parents` since the last call."""
        for parent in parents:
            for _, m in self.d.got(parent).iopub:
                content = m["content"]
                if m["msg_type"] != "comm_open" or content["comm_id"] in self.opened:
                    continue
                if content["data"].get("state", {}).get("_model_name") != self.model:
                    continue
                self.opened.append(content["comm_id"])
                self.sent += self.answer(content["comm_id"], len(self.opened) - 1)

    def wait_all_handled(self) -> None:
        """Wait until the kernel is idle after everything it sent."""
        self.d.wait_until(lambda: all(self.d.is_idle(m) for m in self.sent), "answers handled")


def canvas_answer(lab: LabComms) -> Any:
    def answer(comm_id: str, _: int) -> list[str]:
        return [lab.custom(comm_id, {"type": t}, "jupyter.widget") for t in CANVAS_MESSAGES]

    return answer


def run_cells(d: Driver, frontend: Frontend, cells: list[str]) -> None:
    """Wait until every cell replied, answering new widgets meanwhile; the cells must be ok."""

    def done() -> bool:
        frontend.respond(cells)
        return all(d.got(c).reply is not None and d.is_idle(c) for c in cells)

    d.wait_until(done, "every cell's reply", timeout=60)
    frontend.respond(cells)
    frontend.wait_all_handled()
    for cell in cells:
        assert d.reply(cell)["content"]["status"] == "ok", d.errors(cell)


def canvas_displays(d: Driver, msg_ids: list[str]) -> dict[str, list[str]]:
    """The canvases (model ids) displayed under each of `msg_ids`."""
    return {
        msg_id: [
            m["content"]["data"][WIDGET_MIME]["model_id"]
            for _, m in d.got(msg_id).iopub
            if m["msg_type"] == "display_data" and WIDGET_MIME in m["content"]["data"]
        ]
        for msg_id in msg_ids
    }


def check_figures(d: Driver, frontend: Frontend, cells: list[str]) -> None:
    """Every figure: displayed once in its cell, each message handled on the main thread."""
    state = json.loads(d.run(IPYMPL_CHECK))
    canvases = frontend.opened
    assert len(canvases) == COUNT
    assert sorted(state["figures"]) == sorted(canvases)
    assert sorted(state["initialized"]) == sorted(canvases)
    expected = sorted([c, t, "MainThread"] for c in canvases for t in CANVAS_MESSAGES)
    assert sorted(state["handled"]) == expected
    # Displayed once each, in the cells, never under a comm message (a blank figure).
    shown = canvas_displays(d, cells)
    assert sorted(c for cell in cells for c in shown[cell]) == sorted(canvases)
    assert not any(canvas_displays(d, frontend.sent).values())
    # And each canvas sent its image (a comm_msg with a binary buffer) to the frontend.
    images = {
        m["content"]["comm_id"]
        for msg_id in frontend.sent
        for _, m in d.got(msg_id).iopub
        if m["msg_type"] == "comm_msg" and m.get("buffers")
    }
    assert images == set(canvases)


@pytest.mark.parametrize("setting", SETTINGS)
def test_ipympl_figures_of_queued_cells(kernel: Kernel, setting: str) -> None:
    """Run All of twenty figure cells: the first figures' views talk while the rest are made."""
    d = Driver(kernel[1])
    lab = LabComms(d, setting)
    d.run(IPYMPL_SETUP)
    frontend = Frontend(d, lab, "MPLCanvasModel", canvas_answer(lab))
    cells = [d.execute(FIGURE_CELL.format(i=i)) for i in range(COUNT)]
    run_cells(d, frontend, cells)
    check_figures(d, frontend, cells)
    for cell, canvas in zip(cells, frontend.opened, strict=True):
        assert canvas_displays(d, [cell])[cell] == [canvas]  # each in its own cell


@pytest.mark.parametrize("setting", SETTINGS)
def test_ipympl_figures_of_one_sleeping_loop(kernel: Kernel, setting: str) -> None:
    """One cell makes twenty figures; their messages are handled in its sleeps, on its thread."""
    d = Driver(kernel[1])
    lab = LabComms(d, setting)
    d.run(IPYMPL_SETUP)
    frontend = Frontend(d, lab, "MPLCanvasModel", canvas_answer(lab))
    cell = d.execute(FIGURE_LOOP)
    run_cells(d, frontend, [cell])
    check_figures(d, frontend, [cell])


SLIDER_LOOP = code(f"""
    import threading, time, json
    import ipywidgets as widgets
    sliders, observed = [], []
    for i in range({COUNT}):
        slider = widgets.IntSlider(max=1000)
        slider.observe(
            lambda ch, i=i: observed.append([i, ch["new"], threading.current_thread().name]),
            "value",
        )
        sliders.append(slider)
        time.sleep(0.02)
""")


@pytest.mark.parametrize("setting", SETTINGS)
def test_slider_updates_during_a_sleeping_loop(kernel: Kernel, setting: str) -> None:
    d = Driver(kernel[1])
    lab = LabComms(d, setting)

    def answer(comm_id: str, index: int) -> list[str]:
        update = {"method": "update", "state": {"value": 100 + index}, "buffer_paths": []}
        return [lab.msg(comm_id, update, "jupyter.widget")]

    frontend = Frontend(d, lab, "IntSliderModel", answer)
    cell = d.execute(SLIDER_LOOP)
    run_cells(d, frontend, [cell])
    state = json.loads(
        d.run("print(json.dumps([[s.model_id, s.value] for s in sliders] + [observed]))")
    )
    *values, observed = state
    assert values == [[c, 100 + i] for i, c in enumerate(frontend.opened)]
    assert sorted(observed) == [[i, 100 + i, "MainThread"] for i in range(COUNT)]


FRONTEND_TARGET = code("""
    import threading, time, json, comm
    talks = {}
    def _talk_target(c, msg):
        log = talks.setdefault(c.comm_id, [])
        log.append(["open", threading.current_thread().name])
        c.on_msg(lambda m: log.append([m["content"]["data"]["n"], threading.current_thread().name]))
    comm.get_comm_manager().register_target("talk", _talk_target)
""")
TALK_LOOP = code(f"""
    print("looping", flush=True)
    for _ in range(200):
        if len(talks) == {COUNT} and all(len(log) == 4 for log in talks.values()):
            break
        time.sleep(0.01)
    print("all", len(talks))
""")


@pytest.mark.parametrize("setting", SETTINGS)
def test_frontend_comms_opened_during_a_sleeping_loop(kernel: Kernel, setting: str) -> None:
    """Twenty comms opened by the frontend, each told three things, while a cell sleeps."""
    d = Driver(kernel[1])
    lab = LabComms(d, setting)
    d.run(FRONTEND_TARGET)
    cell = d.execute(TALK_LOOP)
    d.wait_stdout(cell, "looping")
    comm_ids = [uuid.uuid4().hex for _ in range(COUNT)]
    sent = []
    for k, comm_id in enumerate(comm_ids):
        sent.append(lab.open(comm_id, "talk"))
        if k:  # the earlier comm's messages come while the next comms open
            sent += [lab.msg(comm_ids[k - 1], {"n": n}) for n in range(3)]
    sent += [lab.msg(comm_ids[-1], {"n": n}) for n in range(3)]
    assert d.reply(cell)["content"]["status"] == "ok", d.errors(cell)
    assert d.stdout(cell).endswith(f"all {COUNT}\n")  # all handled inside the loop's sleeps
    d.wait_until(lambda: all(d.is_idle(m) for m in sent), "every message handled")
    talks = json.loads(d.run("print(json.dumps(talks))"))
    assert set(talks) == set(comm_ids)
    for log in talks.values():
        assert log == [[e, "MainThread"] for e in ["open", 0, 1, 2]]
