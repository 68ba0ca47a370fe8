"""Comm handlers run on their comm's owner, whatever subshell JupyterLab sends messages on.

Over a real kernel (asyncio and trio), with the subshell headers JupyterLab 4.4+ puts on comm
messages for each value of its setting "Kernel comms over subshells" (`lab_comms.SETTINGS`):
a comm belongs to the shell whose code made it (for a comm the frontend opens: where its target
was registered); its target, `on_msg` and `on_close` callbacks run on that shell's thread, in
the order the messages came; a cell of the owner that waits in `time.sleep` handles them there.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING

import pytest
from kernel_driver import Driver, code
from lab_comms import SETTINGS, LabComms

if TYPE_CHECKING:
    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager

Kernel = tuple["KernelManager", "BlockingKernelClient"]

REGISTER = """\
import json, threading, comm
seen = globals().setdefault("seen", {{}})
def _target(c, msg, name={name!r}):
    seen.setdefault(name, []).append(["open", threading.current_thread().name])
    here = threading.current_thread
    c.on_msg(lambda m: seen[name].append([m["content"]["data"]["n"], here().name]))
    c.on_close(lambda m: seen[name].append(["close", threading.current_thread().name]))
comm.get_comm_manager().register_target({name!r}, _target)
print(threading.current_thread().name)
"""


@pytest.mark.parametrize("setting", SETTINGS)
def test_frontend_comm_runs_where_its_target_was_registered(kernel: Kernel, setting: str) -> None:
    d = Driver(kernel[1])
    lab = LabComms(d, setting)
    subshell = {"subshell_id": d.create_subshell()}
    threads = {
        "main": d.run(REGISTER.format(name=f"main-{setting}")).strip(),
        "sub": d.run(REGISTER.format(name=f"sub-{setting}"), header=subshell).strip(),
    }
    assert threads["main"] == "MainThread"
    assert threads["sub"].startswith("subshell-")
    for where in threads:
        comm_id = uuid.uuid4().hex
        lab.open(comm_id, f"{where}-{setting}")
        for n in range(5):
            lab.msg(comm_id, {"n": n})
        close = lab.close(comm_id)
        d.wait_until(lambda close=close: d.is_idle(close), "the close handled")
    seen = json.loads(d.run(f"print(json.dumps([seen['main-{setting}'], seen['sub-{setting}']]))"))
    for (where, thread), events in zip(threads.items(), seen, strict=True):
        assert events == [[e, thread] for e in ["open", 0, 1, 2, 3, 4, "close"]], where


STOP_SETUP = """\
import threading, time
import ipywidgets as widgets
stop = False
handled_on = None
button = widgets.Button(description="Stop")
def on_click(_):
    global stop, handled_on
    stop, handled_on = True, threading.current_thread().name
button.on_click(on_click)
print(button.model_id, threading.current_thread().name)
"""
STOP_LOOP = """\
stop = False
print("looping", flush=True)
deadline = time.monotonic() + 10  # a kernel that never handles the click is not left busy
while not stop and time.monotonic() < deadline:
    time.sleep(0.1)
print("handled on", handled_on)
"""
CLICK = {"event": "click"}


def click_ends_loop(d: Driver, lab: LabComms, model_id: str, header: dict[str, str]) -> float:
    """Run STOP_LOOP, click the button once it loops; return seconds from click to reply."""
    cell = d.execute(STOP_LOOP, header=header)
    d.wait_stdout(cell, "looping")
    started = time.monotonic()
    lab.custom(model_id, CLICK, "jupyter.widget")
    d.wait_until(lambda: d.got(cell).reply, "the loop's reply")
    elapsed = time.monotonic() - started
    assert d.reply(cell)["content"]["status"] == "ok", d.errors(cell)
    return elapsed


@pytest.mark.parametrize("where", ["main", "subshell"])
@pytest.mark.parametrize("setting", SETTINGS)
def test_stop_button_ends_a_sleeping_loop(kernel: Kernel, setting: str, where: str) -> None:
    """The click is handled inside the loop's time.sleep, on the thread that made the button."""
    d = Driver(kernel[1])
    lab = LabComms(d, setting)
    header = {} if where == "main" else {"subshell_id": d.create_subshell()}
    model_id, thread = d.run(STOP_SETUP, header=header).split()
    for _ in range(3):
        elapsed = click_ends_loop(d, lab, model_id, header)
        assert elapsed < 0.5
    assert d.run("print(handled_on)", header=header).strip() == thread


BUSY_LOOP = """\
stop = False
print("looping", flush=True)
deadline = time.monotonic() + 10
while not stop and time.monotonic() < deadline:
    pass
print("handled on", handled_on)
"""
POLICIES = {
    "comm": "set_comm_policy(button, {policy!r})",
    "target": "set_comm_policy('jupyter.widget', {policy!r})",
    "kernel": "get_kernel().comm_policy = {policy!r}",
}
RESET = {
    "comm": "set_comm_policy(button, None)",
    "target": "set_comm_policy('jupyter.widget', None)",
    "kernel": "get_kernel().comm_policy = 'owner'",
}


@pytest.mark.parametrize("scope", list(POLICIES))
def test_arrival_policy_reaches_a_busy_cell(kernel: Kernel, scope: str) -> None:
    """A thread-safe comm may run where it arrives: a click on a subshell ends a busy loop."""
    d = Driver(kernel[1])
    lab = LabComms(d, "perCommTarget")
    model_id, _ = d.run(STOP_SETUP).split()
    imports = "from async_kernel import get_kernel, set_comm_policy\n"
    d.run(imports + POLICIES[scope].format(policy="arrival"))
    try:
        cell = d.execute(BUSY_LOOP)
        d.wait_stdout(cell, "looping")
        lab.custom(model_id, CLICK, "jupyter.widget")
        assert d.reply(cell)["content"]["status"] == "ok", d.errors(cell)
        assert d.stdout(cell).split()[-2:] == ["on", d.stdout(cell).split()[-1]]
        assert d.stdout(cell).split()[-1].startswith("subshell-")
    finally:
        d.run(imports + RESET[scope])


IDLE_LOOP = """\
stop = False
print("looping", flush=True)
for _ in range(20):
    time.sleep(0.05)
print("seen in the loop:", stop)
"""


def test_owner_idle_policy_waits_for_the_cell(kernel: Kernel) -> None:
    """`owner_idle`: never inside a cell; the click is handled once the cell has ended."""
    d = Driver(kernel[1])
    lab = LabComms(d, "perCommTarget")
    model_id, _ = d.run(STOP_SETUP).split()
    d.run("from async_kernel import set_comm_policy\nset_comm_policy(button, 'owner_idle')")
    cell = d.execute(IDLE_LOOP)
    d.wait_stdout(cell, "looping")
    click = lab.custom(model_id, CLICK, "jupyter.widget")
    assert d.reply(cell)["content"]["status"] == "ok", d.errors(cell)
    assert d.stdout(cell).endswith("seen in the loop: False\n")
    d.wait_until(lambda: d.is_idle(click), "the click handled")
    assert d.run("print(stop, handled_on)") == "True MainThread\n"


SLOW_HANDLER = """\
import threading, time, comm
slow_started = threading.Event()
def _slow(c, msg):
    def on_msg(m):
        slow_started.set()
        time.sleep(0.3)  # the handler's own sleep: it is not interrupted
        c.send({"done": True})
    c.on_msg(on_msg)
comm.get_comm_manager().register_target("slow", _slow)
"""
WAIT_LOOP = """\
print("looping", flush=True)
for _ in range(200):
    time.sleep(0.05)
"""


@pytest.mark.parametrize("how", ["signal", "message"])
def test_interrupt_during_a_safe_point_handler_reaches_the_cell(kernel: Kernel, how: str) -> None:
    """The handler runs to its end; then the cell gets the KeyboardInterrupt."""
    km, kc = kernel
    d = Driver(kc)
    lab = LabComms(d, "perCommTarget")
    d.run(SLOW_HANDLER)
    comm_id = uuid.uuid4().hex
    opened = lab.open(comm_id, "slow")
    d.wait_until(lambda: d.is_idle(opened), "the open handled")
    cell = d.execute(WAIT_LOOP)
    d.wait_stdout(cell, "looping")
    msg = lab.msg(comm_id, {"n": 1})
    probe = d.execute("print(slow_started.wait(10))", header=lab.header(comm_id))
    d.wait_stdout(probe, "True")  # the handler runs inside the loop's sleep now
    d.interrupt(km, how)
    # Well before the loop would end by itself (10 s): the interrupt reached the cell.
    reply = d.reply(cell, timeout=5)["content"]
    assert reply["status"] == "error"
    assert reply["ename"] == "KeyboardInterrupt"
    d.wait_until(lambda: d.is_idle(msg), "the handler's idle")
    assert d.errors(msg) == []
    sent = [m for _, m in d.got(msg).iopub if m["msg_type"] == "comm_msg"]
    assert [m["content"]["data"] for m in sent] == [{"done": True}]


def test_comms_of_a_deleted_subshell_move_to_the_main_shell(kernel: Kernel) -> None:
    d = Driver(kernel[1])
    lab = LabComms(d, "disabled")
    subshell_id = d.create_subshell()
    d.run(REGISTER.format(name="orphan"), header={"subshell_id": subshell_id})
    comm_id = uuid.uuid4().hex
    opened = lab.open(comm_id, "orphan")
    d.wait_until(lambda: d.is_idle(opened), "the open handled")
    deleted = d.send("delete_subshell_request", {"subshell_id": subshell_id}, channel="control")
    assert d.reply(deleted)["content"]["status"] == "ok"
    msg = lab.msg(comm_id, {"n": 7})
    d.wait_until(lambda: d.is_idle(msg), "the message handled")
    assert d.run("print(seen['orphan'][-1])") == "[7, 'MainThread']\n"


def test_comm_made_by_a_handler_belongs_to_its_parents_owner(kernel: Kernel) -> None:
    """A widget made by a callback belongs where the callback's comm does, not the subshell."""
    d = Driver(kernel[1])
    lab = LabComms(d, "perCommTarget")
    model_id, _ = d.run(
        code("""
        import ipywidgets as widgets, threading
        made = []
        def make(_):
            child = widgets.IntSlider()
            child.observe(lambda ch: made.append(threading.current_thread().name), "value")
            made.append(child)
        maker = widgets.Button()
        maker.on_click(make)
        print(maker.model_id, "x")
        """)
    ).split()
    click = lab.custom(model_id, CLICK, "jupyter.widget")
    d.wait_until(lambda: d.is_idle(click), "the click handled")
    child_id = d.run("print(made[0].model_id)").strip()
    update = lab.msg(child_id, {"method": "update", "state": {"value": 3}}, "jupyter.widget")
    d.wait_until(lambda: d.is_idle(update), "the update handled")
    assert d.run("print(made[1:], made[0].value)") == "['MainThread'] 3\n"


CALLER_TARGET = """\
import threading, time, comm
from async_kernel import Caller
results = []
def _caller_target(c, msg):
    def on_msg(m):
        here = Caller()  # the owner's caller: the main shell's
        here.call_soon(lambda: results.append(["call_soon", threading.current_thread().name]))
        here.to_thread(lambda: threading.current_thread().name).add_done_callback(
            lambda p: results.append(["to_thread", p.result()[:20]])
        )
        results.append(["handler", threading.current_thread().name])
    c.on_msg(on_msg)
comm.get_comm_manager().register_target("caller", _caller_target)
"""
CALLER_WAIT = """\
import anyio
with anyio.fail_after(10):
    while len(results) < 3:
        await anyio.sleep(0.01)
print(sorted(results))
"""


@pytest.mark.parametrize("during", ["idle", "sleeping cell"])
def test_caller_calls_from_a_handler(kernel: Kernel, during: str) -> None:
    """A handler schedules on its owner's caller and on a worker; both calls complete."""
    d = Driver(kernel[1])
    lab = LabComms(d, "perCommTarget")
    d.run(CALLER_TARGET)
    comm_id = uuid.uuid4().hex
    opened = lab.open(comm_id, "caller")
    d.wait_until(lambda: d.is_idle(opened), "the open handled")
    if during == "idle":
        msg = lab.msg(comm_id, {"n": 1})
        d.wait_until(lambda: d.is_idle(msg), "the message handled")
    else:
        cell = d.execute(
            "print('looping', flush=True)\n"
            "for _ in range(100):\n    time.sleep(0.05)\n    if results:\n        break"
        )
        d.wait_stdout(cell, "looping")
        lab.msg(comm_id, {"n": 1})
        assert d.reply(cell)["content"]["status"] == "ok", d.errors(cell)
    assert d.run(CALLER_WAIT) == (
        "[['call_soon', 'MainThread'], ['handler', 'MainThread'], "
        "['to_thread', 'async_kernel_worker_']]\n"
    )
