"""The frames an interrupt's traceback shows: the user's, never the kernel's or the event loop's.

An interrupt lands wherever the interrupted thread happens to be: in the SIGINT handler, in the
kernel's interruptible `time.sleep`, in the kernel's output code that a `print` called, or (for
an awaiting cell) deep inside the event loop, where the cancellation is raised. Those frames
say nothing about the user's code, so the traceback is cut at the first of them: what remains
is the cell and the user code it called, as ipykernel shows it.
"""

from __future__ import annotations

import types

from async_kernel.requests._frames import KERNEL_PREFIXES, loop_prefixes

__all__ = ("interrupt_from_cancellation", "without_kernel_frames")


def _cut(tb: types.TracebackType | None, prefixes: tuple[str, ...]) -> types.TracebackType | None:
    """A copy of `tb` that ends before the first frame whose file lies under `prefixes`.

    A copy, so that the exception (which user code may still hold) keeps its own traceback.
    """
    kept: list[types.TracebackType] = []
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(prefixes):
            break
        kept.append(tb)
        tb = tb.tb_next
    head: types.TracebackType | None = None
    for entry in reversed(kept):
        head = types.TracebackType(head, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return head


def without_kernel_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback of a `KeyboardInterrupt`, cut where it enters the kernel's code.

    The SIGINT handler, the interruptible `time.sleep` and the output path of `print` are the
    kernel's places where an interrupt lands; frames below them (the standard library the
    kernel called) go with them. Frames of other libraries that the cell called stay.
    """
    return _cut(tb, KERNEL_PREFIXES)


def interrupt_from_cancellation(
    tb: types.TracebackType | None,
) -> tuple[KeyboardInterrupt, types.TracebackType | None]:
    """The `KeyboardInterrupt` that a cancellation caused by an interrupt is shown as.

    The cancellation's traceback is cut where it enters the event loop (asyncio, anyio, trio)
    or the kernel, so it ends at the `await` of the user's code where the interrupt found it.
    """
    cut = _cut(tb, KERNEL_PREFIXES + loop_prefixes())
    return KeyboardInterrupt().with_traceback(cut), cut
