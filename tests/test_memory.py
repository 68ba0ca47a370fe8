"""The kernel's Python heap stays flat over many executes (tracemalloc inside the kernel).

The heap is compared between two snapshots taken `MEASURED` executes apart, after as many
executes since tracing started: objects that existed before tracing started and are replaced
over time (free lists, caches) are traced anew during that first stretch, which looks like
growth but is not. What the replay guard keeps (the signatures of the messages,
allocated where `wire._frames` receives them, and its bucket lists) is left out: it grows until its
window is full and is tested on its own in `test_replay.py`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from kernel_driver import Driver, code

if TYPE_CHECKING:
    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager

__all__ = ()

pytestmark = pytest.mark.timeout(180)

MEASURED = 800
LIMIT = 40 * 1024
"""Bytes the traced heap may grow over `MEASURED` executes (51 per execute; 5 to 12 KiB seen)."""
CELL = "x = [0] * 1000\nprint(len(x))\nlen(x)"
"""A cell with stream output and a result (`execute_result`, the displayhook)."""

START = code("""
    import gc, tracemalloc
    tracemalloc.start(1)
    _memory_snapshots = []
""")
SNAPSHOT = "gc.collect(); _memory_snapshots.append(tracemalloc.take_snapshot())"
REPORT = code("""
    import json
    tracemalloc.stop()
    _memory_keep = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "*/async_kernel/wire/_frames.py"),
        tracemalloc.Filter(False, "*/async_kernel/wire/_replay.py"),
    ]
    _memory_before, _memory_after = (s.filter_traces(_memory_keep) for s in _memory_snapshots)
    _memory_stats = _memory_after.compare_to(_memory_before, "lineno")
    print(json.dumps({
        "growth": sum(s.size_diff for s in _memory_stats),
        "top": [str(s) for s in _memory_stats[:5]],
    }))
    del _memory_snapshots, _memory_before, _memory_after, _memory_stats
""")


def executes(d: Driver, n: int) -> None:
    """Send `n` executes of `CELL` back to back (`store_history` off), then await each reply."""
    content = {"code": CELL, "silent": False, "store_history": False, "allow_stdin": False}
    ids = [d.send("execute_request", content) for _ in range(n)]
    for msg_id in ids:
        assert d.reply(msg_id)["content"]["status"] == "ok"


def test_heap_is_flat_over_executes(kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    d = Driver(kernel[1])
    d.run(START)
    try:
        executes(d, MEASURED)  # first use, and untraced objects being replaced: not compared
        d.run(SNAPSHOT)
        executes(d, MEASURED)
        d.run(SNAPSHOT)
    finally:
        result = json.loads(d.run(REPORT))
    assert result["growth"] < LIMIT, result["top"]


def test_only_cells_in_the_history_log_their_output(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    """A result outside the history is logged under no cell (IPython used the next one's)."""
    d = Driver(kernel[1])
    stored = d.reply(d.execute("40 + 2"))["content"]["execution_count"]
    content = {"code": "41 + 1", "silent": False, "store_history": False}
    for msg_id in [d.send("execute_request", content) for _ in range(3)]:
        assert d.wait_for(msg_id, "execute_result")[1]["content"]["data"]["text/plain"] == "42"
        d.reply(msg_id)
    check = code(f"""
        _outputs = get_ipython().history_manager.outputs
        _counts = ({stored}, {stored + 1})
        print([[o.bundle["text/plain"] for o in _outputs.get(n, [])] for n in _counts])
    """)
    assert d.run(check) == "[['42'], []]\n"
