"""Cutting an interrupt's traceback to the user's frames, in-process."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import pytest

import async_kernel
from async_kernel.ipython._tracebacks import interrupt_from_cancellation, without_kernel_frames

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ()

KERNEL_FILE = os.path.join(os.path.dirname(async_kernel.__file__), "requests", "_interrupts.py")
LOOP_FILE = os.path.join(os.path.dirname(asyncio.__file__), "tasks.py")


def defined_in(filename: str, source: str, name: str) -> Callable[..., Any]:
    """A function whose frames say they run in `filename`."""
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]


def names(tb: TracebackType | None) -> list[str]:
    found = []
    while tb is not None:
        found.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return found


def user_function(then: Callable[[], object]) -> None:
    then()


def traceback_of(run: Callable[[], object]) -> tuple[BaseException, TracebackType | None]:
    try:
        run()
    except BaseException as e:  # what the cell raised, whatever it is
        return e, e.__traceback__
    pytest.fail("nothing was raised")


def test_kernel_frames_and_what_they_called_are_cut() -> None:
    handler = defined_in(KERNEL_FILE, "def on_sigint(then):\n    then()\n", "on_sigint")

    def stdlib_below() -> None:
        raise KeyboardInterrupt

    error, tb = traceback_of(lambda: user_function(lambda: handler(stdlib_below)))
    cut = without_kernel_frames(tb)
    assert names(cut) == ["traceback_of", "<lambda>", "user_function", "<lambda>"]
    assert names(error.__traceback__)[-2:] == ["on_sigint", "stdlib_below"]  # left as it was


def test_a_traceback_without_kernel_frames_is_kept_whole() -> None:
    def library() -> None:
        raise KeyboardInterrupt

    _, tb = traceback_of(lambda: user_function(library))
    assert names(without_kernel_frames(tb)) == names(tb)


def test_a_cancellation_becomes_a_keyboard_interrupt_at_the_users_await() -> None:
    loop_sleep = defined_in(
        LOOP_FILE, "import asyncio\ndef sleep():\n    raise asyncio.CancelledError\n", "sleep"
    )
    _, tb = traceback_of(lambda: user_function(loop_sleep))
    interrupt, cut = interrupt_from_cancellation(tb)
    assert type(interrupt) is KeyboardInterrupt
    assert interrupt.__traceback__ is cut
    assert names(cut) == ["traceback_of", "<lambda>", "user_function"]
