"""Which request an output belongs to: the parent of stream, display, result and comm messages.

The parent is found in this order:

1. the context's request (`current_job`), set for every request and copied into tasks,
   `Caller` calls, `anyio.to_thread` and `asyncio.to_thread`;
2. the thread's bound parent, set with `set_thread_parent` or `output_to`;
3. a plain thread's policy default: the most recent main-shell execute request (the cell the
   user is looking at), or with `ThreadParentPolicy.starter`, the request that started the thread.
"""

from __future__ import annotations

import contextlib
import enum
import threading
from typing import TYPE_CHECKING

from async_kernel.wire._job import Job, current_job

if TYPE_CHECKING:
    from collections.abc import Generator

__all__ = (
    "ThreadParentPolicy",
    "current_parent",
    "output_to",
    "remember_starter",
    "reset_thread_parent",
    "set_latest_execute",
    "set_thread_parent",
    "set_thread_parent_policy",
)


class ThreadParentPolicy(enum.StrEnum):
    """Where output from a thread with no parent of its own goes."""

    latest = "latest"
    """To the most recent main-shell execute request: the cell the user is looking at."""
    starter = "starter"
    """To the request that was current when the thread was started."""


class _State:
    latest: Job | None = None
    policy: ThreadParentPolicy = ThreadParentPolicy.latest


_local = threading.local()
_starter_key = "_async_kernel_parent"


class _Token:
    __slots__ = ("previous",)

    def __init__(self, previous: Job | None) -> None:
        self.previous = previous


def current_parent() -> Job | None:
    """Return the request that output produced here belongs to, or None if there is none yet."""
    job = current_job.get()
    if job is not None:
        return job
    bound: Job | None = getattr(_local, "parent", None)
    if bound is not None:
        return bound
    if _State.policy is ThreadParentPolicy.starter:
        started: Job | None = getattr(threading.current_thread(), _starter_key, None)
        if started is not None:
            return started
    return _State.latest


def set_thread_parent(parent: Job | None) -> _Token:
    """Send output of the current thread (where no request context applies) to `parent`.

    Returns:
        A token for `reset_thread_parent`.
    """
    token = _Token(getattr(_local, "parent", None))
    _local.parent = parent
    return token


def reset_thread_parent(token: _Token) -> None:
    """Undo the `set_thread_parent` call that returned `token`."""
    _local.parent = token.previous


@contextlib.contextmanager
def output_to(parent: Job | None) -> Generator[Job | None]:
    """Route all output of this block, in this thread and context, to `parent`.

    Example:
        ```python
        job = get_job()  # in a cell
        def work():
            with output_to(job):
                print("lands in the cell that started me")
        ```
    """
    token = set_thread_parent(parent)
    ctx_token = current_job.set(parent)
    try:
        yield parent
    finally:
        current_job.reset(ctx_token)
        reset_thread_parent(token)


def set_latest_execute(job: Job) -> None:
    """Record `job` as the most recent main-shell execute request (the kernel calls this)."""
    _State.latest = job


def set_thread_parent_policy(policy: ThreadParentPolicy | str) -> None:
    """Choose where output from plain threads goes (see `ThreadParentPolicy`)."""
    _State.policy = ThreadParentPolicy(policy)


def remember_starter(thread: threading.Thread) -> None:
    """Record the current parent on a thread that is being started (`ThreadParentPolicy.starter`).

    The kernel calls this from its `threading.Thread.start`; under the `latest` policy it does
    nothing.
    """
    if _State.policy is ThreadParentPolicy.starter:
        setattr(thread, _starter_key, current_parent())
