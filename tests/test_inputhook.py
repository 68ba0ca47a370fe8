"""Units of the input-hook machinery: the runner, the asyncio loop and the trio instrument.

Hooks here are stand-ins for a toolkit's: they block in `select` on the context's descriptor,
as Qt's and Tk's do, and record what happened. Another thread acts only after the hook has
signalled that it runs (an event), so no test orders anything with a sleep.
"""

from __future__ import annotations

import asyncio
import select
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest

import async_kernel.ipython._gui_loops as gui_loops
import async_kernel.ipython._inputhook as inputhook
from async_kernel.ipython._gui_loops import (
    InputHookEventLoop,
    attach,
    detach_all,
    main_loop_options,
)
from async_kernel.ipython._inputhook import HookContext, HookRunner

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.timeout(30)

TIMEOUT = 10.0


class BlockingHook:
    """A hook that waits (in `select`, like a toolkit) until its context turns readable."""

    def __init__(self, action: Callable[[], object] | None = None) -> None:
        self.calls = 0
        self.running = threading.Event()
        self.action = action

    def __call__(self, context: HookContext) -> None:
        self.calls += 1
        if self.action is not None:
            self.action()
        self.running.set()
        ready, _, _ = select.select([context.fileno()], [], [], TIMEOUT)
        assert ready, "the hook was never told to return"
        assert context.input_is_ready()


def _after(event: threading.Event, action: Callable[[], object]) -> threading.Thread:
    """Run `action` on a new thread once `event` is set."""

    def run() -> None:
        assert event.wait(TIMEOUT)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def loop_socket() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A socket pair standing for the loop's wait descriptor: writing to [1] means work."""
    pair = socket.socketpair()
    yield pair
    for sock in pair:
        sock.close()


def _runner(
    hook: Callable[[HookContext], object],
    loop_fd: int | None,
    failures: list[BaseException] | None = None,
) -> HookRunner:
    sink = failures if failures is not None else []
    return HookRunner(hook, loop_fd=loop_fd, on_failure=sink.append)


def test_all_is_declared() -> None:
    assert set(inputhook.__all__) == {"HookContext", "HookRunner"}
    assert set(gui_loops.__all__) == {
        "HookSelector",
        "InputHookEventLoop",
        "LoopHook",
        "attach",
        "detach_all",
        "main_loop_options",
    }


def test_hook_runs_until_the_loop_has_io(loop_socket: tuple[socket.socket, socket.socket]) -> None:
    hook = BlockingHook()
    runner = _runner(hook, loop_socket[0].fileno())
    try:
        _after(hook.running, lambda: loop_socket[1].send(b"x"))
        assert runner.wait(TIMEOUT) == 0.0
        assert hook.calls == 1
    finally:
        runner.close()


def test_hook_runs_until_the_wait_is_over(loop_socket: tuple[socket.socket, socket.socket]) -> None:
    hook = BlockingHook()
    runner = _runner(hook, loop_socket[0].fileno())
    try:
        start = time.monotonic()
        assert runner.wait(0.05) == 0.0
        assert time.monotonic() - start >= 0.05
        assert hook.calls == 1
    finally:
        runner.close()


def test_io_ready_before_the_wait_skips_the_hook(
    loop_socket: tuple[socket.socket, socket.socket],
) -> None:
    hook = BlockingHook()
    runner = _runner(hook, loop_socket[0].fileno())
    try:
        loop_socket[1].send(b"x")
        assert runner.wait(TIMEOUT) == 0.0
        assert hook.calls == 0
    finally:
        runner.close()


def test_a_hook_that_returns_early_leaves_the_rest_of_the_wait(
    loop_socket: tuple[socket.socket, socket.socket],
) -> None:
    calls: list[int] = []
    runner = _runner(lambda _: calls.append(1), loop_socket[0].fileno())
    try:
        left = runner.wait(5.0)
        assert left is not None
        assert 4.0 < left <= 5.0
        assert runner.wait(None) is None
        assert len(calls) == 2
    finally:
        runner.close()


def test_wake_ends_the_run_and_is_harmless_otherwise(
    loop_socket: tuple[socket.socket, socket.socket],
) -> None:
    hook = BlockingHook()
    runner = _runner(hook, loop_socket[0].fileno())
    try:
        runner.wake()  # nothing runs: no byte may be left to end the next run early
        start = time.monotonic()
        assert runner.wait(0.05) == 0.0
        assert time.monotonic() - start >= 0.05
        hook.running.clear()
        _after(hook.running, runner.wake)
        start = time.monotonic()
        assert runner.wait(TIMEOUT) == 0.0
        assert time.monotonic() - start < TIMEOUT / 2
    finally:
        runner.close()


def test_a_busy_loop_gets_gui_turns_at_a_bounded_rate(
    loop_socket: tuple[socket.socket, socket.socket],
) -> None:
    hook = BlockingHook()
    runner = _runner(hook, loop_socket[0].fileno())
    try:
        assert runner.wait(0) == 0.0
        assert hook.calls == 0  # the last turn was just now
        runner._last_turn -= inputhook.BUSY_INTERVAL  # pyright: ignore[reportPrivateUsage]
        assert runner.wait(0) == 0.0
        assert hook.calls == 1
        assert runner.wait(0) == 0.0
        assert hook.calls == 1
    finally:
        runner.close()


def test_without_a_loop_descriptor_the_hook_runs_in_slices() -> None:
    hook = BlockingHook()
    runner = _runner(hook, None)
    try:
        start = time.monotonic()
        assert runner.wait(None) == 0.0
        assert time.monotonic() - start < TIMEOUT / 2
        assert hook.calls == 1
    finally:
        runner.close()


def test_a_failing_hook_is_reported(loop_socket: tuple[socket.socket, socket.socket]) -> None:
    failures: list[BaseException] = []

    def hook(_: HookContext) -> None:
        raise ValueError("broken toolkit")

    runner = _runner(hook, loop_socket[0].fileno(), failures)
    try:
        assert runner.wait(TIMEOUT) == 0.0
        assert [str(f) for f in failures] == ["broken toolkit"]
    finally:
        runner.close()


def test_closed_runner_waits_plainly_and_its_thread_ends(
    loop_socket: tuple[socket.socket, socket.socket],
) -> None:
    hook = BlockingHook()
    runner = _runner(hook, loop_socket[0].fileno())
    assert any(t.name == "async_kernel_gui_watcher" for t in threading.enumerate())
    runner.close()
    assert runner.wait(1.5) == 1.5
    assert hook.calls == 0
    assert not any(t.name == "async_kernel_gui_watcher" for t in threading.enumerate())


def test_a_signal_ends_the_hook(loop_socket: tuple[socket.socket, socket.socket]) -> None:
    """The Python handler runs only once the hook returns, so the wake-up fd must end it."""
    got: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, _: got.append(signum))
    pair = gui_loops._take_wakeup_fd()  # pyright: ignore[reportPrivateUsage]
    if pair is None:
        signal.signal(signal.SIGUSR1, previous)
        pytest.skip("a signal wake-up fd is already set in this process")
    hook = BlockingHook()
    runner = HookRunner(hook, loop_fd=loop_socket[0].fileno(), wake_sock=pair[0], on_failure=print)
    try:
        main = threading.get_ident()
        _after(hook.running, lambda: signal.pthread_kill(main, signal.SIGUSR1))
        start = time.monotonic()
        assert runner.wait(TIMEOUT) == 0.0
        assert time.monotonic() - start < TIMEOUT / 2
        assert got == [signal.SIGUSR1]
    finally:
        runner.close()
        gui_loops._give_back_wakeup_fd(pair)  # pyright: ignore[reportPrivateUsage]
        signal.signal(signal.SIGUSR1, previous)
    assert signal.set_wakeup_fd(-1) == -1


# --- the loops ---------------------------------------------------------------------------


def test_main_loop_options() -> None:
    assert main_loop_options("asyncio") == {"loop_factory": InputHookEventLoop}
    assert main_loop_options("trio") == {}


def test_asyncio_loop_runs_the_hook_while_it_waits_and_is_plain_again_after() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, InputHookEventLoop)
        hook = BlockingHook()
        attached = attach(hook, on_failure=print)
        assert "call_soon" in vars(loop)
        start = time.monotonic()
        await asyncio.sleep(0.05)  # the timer ends the hook's run
        assert hook.calls >= 1
        # Another thread's call ends the run too (the loop's self-pipe is in its epoll set).
        hook.running.clear()
        done = asyncio.Event()
        _after(hook.running, lambda: loop.call_soon_threadsafe(done.set))
        await asyncio.wait_for(done.wait(), TIMEOUT)
        assert time.monotonic() - start < TIMEOUT / 2
        attached.detach()
        assert loop.hook_selector.runner is None
        assert "call_soon" not in vars(loop)
        assert "call_at" not in vars(loop)
        calls = hook.calls
        await asyncio.sleep(0.02)
        assert hook.calls == calls

    with asyncio.Runner(loop_factory=InputHookEventLoop) as runner:
        runner.run(main())


def test_asyncio_work_scheduled_by_a_gui_callback_starts_at_once() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        calls: list[int] = []

        def gui_callback() -> None:  # as a button handler, inside the hook's run
            if not calls:
                loop.call_soon(done.set)
            calls.append(1)

        attached = attach(BlockingHook(gui_callback), on_failure=print)
        try:
            start = time.monotonic()
            # The loop's own wait would last TIMEOUT (wait_for's timer): only the wake of
            # `call_soon` inside the hook makes this quick.
            await asyncio.wait_for(done.wait(), TIMEOUT)
            assert time.monotonic() - start < TIMEOUT / 2
        finally:
            attached.detach()

    with asyncio.Runner(loop_factory=InputHookEventLoop) as runner:
        runner.run(main())


def test_detach_all_leaves_the_plain_loop() -> None:
    """What the kernel does at shutdown, whatever `%gui` left on."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, InputHookEventLoop)
        attach(BlockingHook(), on_failure=print)
        detach_all()
        assert loop.hook_selector.runner is None
        assert "call_soon" not in vars(loop)
        detach_all()  # nothing left: harmless

    with asyncio.Runner(loop_factory=InputHookEventLoop) as runner:
        runner.run(main())
    assert not any(t.name == "async_kernel_gui_watcher" for t in threading.enumerate())


def test_attach_refuses_a_loop_the_kernel_did_not_build() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="kernel's main event loop"):
            attach(BlockingHook(), on_failure=print)

    asyncio.run(main())


def test_trio_instrument_runs_the_hook_and_wakes_trio() -> None:
    trio = pytest.importorskip("trio")

    async def main() -> None:
        hook = BlockingHook()
        attached = attach(hook, on_failure=print)
        try:
            start = time.monotonic()
            await trio.sleep(0.05)  # trio is woken once the time is up
            assert hook.calls >= 1
            assert time.monotonic() - start < TIMEOUT / 2
            done = trio.Event()
            async with trio.open_nursery() as nursery:

                def gui_callback() -> None:  # a button handler that starts a task, once
                    if hook.action is not None:
                        hook.action = None
                        nursery.start_soon(_set, done)

                hook.action = gui_callback
                with trio.fail_after(TIMEOUT / 2):
                    await done.wait()
        finally:
            attached.detach()
        hook.action = None
        calls = hook.calls
        await trio.sleep(0.02)
        assert hook.calls == calls

    async def _set(event: trio.Event) -> None:
        event.set()

    trio.run(main)
