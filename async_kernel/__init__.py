"""async-kernel: a concurrent Python kernel for Jupyter."""

from __future__ import annotations

from async_kernel.caller import Caller
from async_kernel.enums import Channel, KernelConcurrencyMode, MsgType, RunMode
from async_kernel.pending import Pending, PendingCancelled

__all__ = (
    "Caller",
    "Channel",
    "KernelConcurrencyMode",
    "MsgType",
    "Pending",
    "PendingCancelled",
    "RunMode",
    "__version__",
)

__version__ = "0.1.0"
