"""The accessors a user reaches for in a cell: the kernel and the current request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from async_kernel.job import get_job
from async_kernel.routing import output_to, reset_thread_parent, set_thread_parent

if TYPE_CHECKING:
    from async_kernel.kernel import Kernel

__all__ = ("get_job", "get_kernel", "output_to", "reset_thread_parent", "set_thread_parent")


def get_kernel() -> Kernel:
    """Return the running kernel.

    Raises:
        RuntimeError: No kernel runs in this process.
    """
    from async_kernel.kernel import Kernel

    if not Kernel.initialized():
        msg = "no async-kernel runs in this process"
        raise RuntimeError(msg)
    return Kernel.instance()
