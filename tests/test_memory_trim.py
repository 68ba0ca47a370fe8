"""Free memory goes back to the system after a burst: `MemoryTrim` units and a real kernel."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from kernel_driver import Driver, code

from async_kernel._memory import MemoryTrim, malloc_trim

if TYPE_CHECKING:
    from collections.abc import Callable

    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager


class Clock:
    """Collects what `MemoryTrim` schedules; the test runs it when it likes."""

    def __init__(self) -> None:
        self.waiting: list[tuple[float, Callable[[], None]]] = []

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        self.waiting.append((delay, fn))

    def run_all(self) -> None:
        waiting, self.waiting = self.waiting, []
        for _, fn in waiting:
            fn()


@pytest.fixture
def trimmed() -> list[int]:
    return []


def make(clock: Clock, trimmed: list[int], every: int = 3) -> MemoryTrim:
    return MemoryTrim(clock.schedule, trim=lambda: trimmed.append(1), every=every, quiet=0.5)


def test_a_quiet_kernel_after_enough_requests_is_trimmed(trimmed: list[int]) -> None:
    clock = Clock()
    trim = make(clock, trimmed)
    for _ in range(2):
        trim.finished(idle=True)
    assert clock.waiting == [], "fewer than `every` requests: nothing to do"
    trim.finished(idle=False)
    assert clock.waiting == [], "not idle yet"
    trim.finished(idle=True)
    assert [delay for delay, _ in clock.waiting] == [0.5]
    clock.run_all()
    assert trimmed == [1]
    assert trim.trims == 1
    trim.finished(idle=True)
    assert clock.waiting == [], "the count starts again after a trim"


def test_requests_during_the_quiet_time_put_the_trim_off(trimmed: list[int]) -> None:
    clock = Clock()
    trim = make(clock, trimmed)
    for _ in range(3):
        trim.finished(idle=True)
    assert len(clock.waiting) == 1
    trim.finished(idle=True)  # a request came and went during the quiet time
    assert len(clock.waiting) == 1, "one trim armed at a time"
    clock.run_all()
    assert trimmed == [], "not quiet: no trim"
    assert len(clock.waiting) == 1, "idle again: a new quiet time is waited out"
    clock.run_all()
    assert trimmed == [1], "the lull after it trims"


def test_a_busy_kernel_is_trimmed_after_its_next_lull(trimmed: list[int]) -> None:
    clock = Clock()
    trim = make(clock, trimmed)
    for _ in range(3):
        trim.finished(idle=True)
    trim.finished(idle=False)  # requests still running when the quiet time is over
    clock.run_all()
    assert (trimmed, clock.waiting) == ([], [])
    trim.finished(idle=True)
    clock.run_all()
    assert trimmed == [1]


def test_a_failing_trim_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise OSError("no")

    trim = MemoryTrim(clock.schedule, trim=failing, every=1, quiet=0.1)
    trim.finished(idle=True)
    clock.run_all()
    assert "could not return free memory" in caplog.text
    assert trim.trims == 0
    trim.finished(idle=True)
    clock.run_all()
    assert calls == [1, 1]


@pytest.mark.skipif(malloc_trim is None, reason="the C library is not glibc")
def test_malloc_trim_is_glibcs() -> None:
    assert malloc_trim is not None
    assert malloc_trim(0) in (0, 1)


@pytest.fixture(scope="module")
def driver(kernel: tuple[KernelManager, BlockingKernelClient]) -> Driver:
    return Driver(kernel[1])


def test_the_kernel_trims_after_a_burst(driver: Driver) -> None:
    d = driver
    # A thread of the kernel's reports the next trim: any request (a probe) would put it off.
    d.run(
        code(
            """
            import threading, time
            def report_trim(trim=get_ipython().kernel.memory_trim):
                seen, deadline = trim.trims, time.monotonic() + 30
                while trim.trims == seen and time.monotonic() < deadline:
                    time.sleep(0.05)
                print("trims:", trim.trims - seen, flush=True)
            threading.Thread(target=report_trim, daemon=True).start()
            """
        )
    )
    burst = [d.execute("x = [0] * 1000; del x") for _ in range(520)]
    for msg_id in burst:
        assert d.reply(msg_id)["content"]["status"] == "ok"
    # Output of a plain thread goes to the latest cell.
    assert "trims: 1" in d.wait_stdout(burst[-1], "trims:", timeout=40)
