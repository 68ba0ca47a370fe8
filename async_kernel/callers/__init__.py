"""Callers: one event loop per thread, and the calls other threads hand to it.

The lowest layer of the kernel: `Caller`, `Pending` and the worker pool know nothing of
messages. Their public names are exported by `async_kernel`.
"""

__all__ = ()
