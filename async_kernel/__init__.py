"""async-kernel: a concurrent Python kernel for Jupyter.

Everything a notebook or a library needs is imported from here; the subpackages are the
kernel's machinery (see the "Architecture" page of the docs).
"""

from __future__ import annotations

from async_kernel._enums import Channel, KernelConcurrencyMode, MsgType, RunMode
from async_kernel._kernel import Kernel, get_kernel
from async_kernel._version import __version__
from async_kernel.callers._caller import Caller, get_caller
from async_kernel.callers._pending import Pending, PendingCancelled
from async_kernel.output._comm import CommPolicy, set_comm_policy
from async_kernel.output._routing import (
    ThreadParentPolicy,
    current_parent,
    output_to,
    reset_thread_parent,
    set_thread_parent,
)
from async_kernel.wire._job import ExecuteState, Job, get_job

__all__ = (
    "Caller",
    "Channel",
    "CommPolicy",
    "ExecuteState",
    "Job",
    "Kernel",
    "KernelConcurrencyMode",
    "MsgType",
    "Pending",
    "PendingCancelled",
    "RunMode",
    "ThreadParentPolicy",
    "__version__",
    "current_parent",
    "get_caller",
    "get_job",
    "get_kernel",
    "output_to",
    "reset_thread_parent",
    "set_comm_policy",
    "set_thread_parent",
)
