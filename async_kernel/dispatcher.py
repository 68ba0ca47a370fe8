"""The run-mode policy: which mode a request runs in, and where it is sent to run.

`run_mode_for` answers *how* (the default table, the kernel's concurrency mode and the
overrides of an execute request); `Dispatcher.submit` answers *where and when*: it hands the
job to a caller, and for `blocking` jobs holds back later jobs of the same channel (and
subshell) until the blocking one is done.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import TYPE_CHECKING, Any

from async_kernel.enums import Channel, KernelConcurrencyMode, MsgType, RunMode

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from async_kernel.caller import Caller
    from async_kernel.job import Job
    from async_kernel.pending import Pending

__all__ = (
    "DEFAULT_RUN_MODES",
    "Dispatcher",
    "all_concurrency_run_modes",
    "execute_override",
    "run_mode_for",
)

log = logging.getLogger("async_kernel")

_SHELL_AND_CONTROL: dict[MsgType, tuple[RunMode | None, RunMode]] = {
    MsgType.execute_request: (RunMode.queue, RunMode.task),
    MsgType.complete_request: (RunMode.thread, RunMode.thread),
    MsgType.inspect_request: (RunMode.thread, RunMode.thread),
    MsgType.is_complete_request: (RunMode.thread, RunMode.thread),
    MsgType.history_request: (RunMode.thread, RunMode.thread),
    MsgType.comm_msg: (RunMode.task, RunMode.task),
    MsgType.kernel_info_request: (RunMode.blocking, RunMode.blocking),
    MsgType.comm_info_request: (RunMode.blocking, RunMode.blocking),
    MsgType.comm_open: (RunMode.blocking, RunMode.blocking),
    MsgType.comm_close: (RunMode.blocking, RunMode.blocking),
    MsgType.interrupt_request: (RunMode.task, RunMode.task),
    MsgType.shutdown_request: (None, RunMode.task),
    MsgType.debug_request: (None, RunMode.task),
    MsgType.create_subshell_request: (None, RunMode.task),
    MsgType.delete_subshell_request: (None, RunMode.task),
    MsgType.list_subshell_request: (None, RunMode.task),
}

DEFAULT_RUN_MODES: dict[tuple[Channel, MsgType], RunMode] = {
    (channel, msg_type): mode
    for msg_type, modes in _SHELL_AND_CONTROL.items()
    for channel, mode in zip((Channel.shell, Channel.control), modes, strict=True)
    if mode is not None
}
"""The run mode of each (channel, msg_type) under `KernelConcurrencyMode.default`."""

_MODE_PREFIXES = ("##", "RunMode.")


def execute_override(
    content: dict[str, Any], metadata: dict[str, Any], header: dict[str, Any]
) -> RunMode | None:
    """Return the run mode an execute request asks for, strongest first, or None.

    The order is: the code's first line (`##thread` or `RunMode.thread`), a cell tag equal to
    a mode, the metadata's `run_mode`, the header's `run_mode`. A first line that is not
    exactly a mode (`# threading demo`, `##threads`) is an ordinary comment.
    """
    code = content.get("code")
    if isinstance(code, str) and code:
        first = code.lstrip("\r\n").split("\n", 1)[0].strip()
        if first.startswith(_MODE_PREFIXES) and (mode := RunMode.get(first)):
            return mode
    tags = metadata.get("tags")
    if isinstance(tags, list):
        for tag in tags:  # pyright: ignore[reportUnknownVariableType]
            if isinstance(tag, str) and (mode := RunMode.get(tag)) and tag == mode.value:
                return mode
    for source in (metadata, header):
        if (mode := RunMode.get(source.get("run_mode"))) is not None:
            return mode
    return None


def run_mode_for(
    msg_type: str,
    channel: Channel,
    concurrency_mode: KernelConcurrencyMode,
    job: Job | None = None,
) -> RunMode | None:
    """Return the run mode of a request, or None for a request the channel does not take."""
    try:
        default = DEFAULT_RUN_MODES[channel, MsgType(msg_type)]
    except (KeyError, ValueError):
        return None
    if concurrency_mode is KernelConcurrencyMode.blocking:
        return RunMode.blocking
    if job is not None and msg_type == MsgType.execute_request:
        msg = job.msg
        return execute_override(msg.content, msg.metadata, msg.header) or default
    return default


def all_concurrency_run_modes() -> list[dict[str, str]]:
    """Return a row per (concurrency mode, channel, msg_type) with its run mode.

    The rows are plain dicts, ready for `pandas.DataFrame(rows)`.
    """
    return [
        {
            "concurrency_mode": cmode.value,
            "channel": channel.value,
            "msg_type": msg_type.value,
            "run_mode": (
                RunMode.blocking if cmode is KernelConcurrencyMode.blocking else mode
            ).value,
        }
        for cmode in KernelConcurrencyMode
        for (channel, msg_type), mode in DEFAULT_RUN_MODES.items()
    ]


class Dispatcher:
    """Sends each job to its caller in its run mode; holds jobs behind a blocking one.

    Args:
        run: The coroutine function that handles a job (the kernel's request wrapper).
        caller_for: Returns the caller a job runs on (`queue`, `task` and `blocking` modes).
        blocking_caller_for: Returns the caller of a `blocking` job that is not user code.
        run_now: Handles a job synchronously (for handlers that are plain functions).
        is_sync: Whether `run_now` can handle a job; such `blocking` jobs run without a task.
    """

    def __init__(
        self,
        run: Callable[[Job], Coroutine[Any, Any, None]],
        caller_for: Callable[[Job], Caller],
        blocking_caller_for: Callable[[Job], Caller],
        *,
        run_now: Callable[[Job], None] | None = None,
        is_sync: Callable[[Job], bool] | None = None,
    ) -> None:
        self._run = run
        self._run_now = run_now
        self._is_sync = is_sync
        self._caller_for = caller_for
        self._blocking_caller_for = blocking_caller_for
        self._lock = threading.Lock()
        self._blocked: set[tuple[Channel, str | None]] = set()
        self._held: dict[tuple[Channel, str | None], collections.deque[Job]] = {}
        self._seq: dict[tuple[Channel, str | None], int] = {}
        self._aborting: dict[tuple[Channel, str | None], tuple[int, int]] = {}

    def next_seq(self, job: Job) -> int:
        """Give `job` its arrival number within its channel and subshell."""
        key = (job.channel, job.subshell_id)
        with self._lock:
            job.seq = self._seq.get(key, 0) + 1
            self._seq[key] = job.seq
        return job.seq

    def abort_queued(self, job: Job) -> None:
        """Abort the execute requests that arrived before now behind `job` in its (sub)shell.

        By arrival number, not by clock: what was already received is aborted, later ones run.
        """
        key = (job.channel, job.subshell_id)
        with self._lock:
            self._aborting[key] = (job.seq, self._seq.get(key, 0))

    def is_aborted(self, job: Job) -> bool:
        """Whether `job` is an execute queued behind an error, to be answered `aborted`."""
        lo, hi = self._aborting.get((job.channel, job.subshell_id), (0, 0))
        return job.channel is Channel.shell and lo < job.seq <= hi

    def submit(self, job: Job) -> None:
        """Start `job` in its run mode, or hold it while a blocking job of its channel runs."""
        key = (job.channel, job.subshell_id)
        with self._lock:
            if key in self._blocked:
                self._held.setdefault(key, collections.deque()).append(job)
                return
            if job.run_mode is RunMode.blocking:
                self._blocked.add(key)
        self._start(job)

    def _start(self, job: Job) -> None:
        match job.run_mode:
            case RunMode.blocking:
                caller = (
                    self._caller_for(job)
                    if job.msg_type == MsgType.execute_request
                    else self._blocking_caller_for(job)
                )
                if self._run_now is not None and self._is_sync is not None and self._is_sync(job):
                    pending: Pending[None] = caller.call_direct(self._run_now, job)
                else:
                    pending = caller.call_soon(self._run, job)
                pending.add_done_callback(lambda _: self._release(job))
            case RunMode.queue:
                self._caller_for(job).queue_call(self._run, job)
            case RunMode.thread:
                self._caller_for(job).to_thread(self._run, job)
            case _ if job.msg_type == MsgType.comm_msg:
                # Trio does not start tasks in the order they were spawned: messages of one
                # comm go through a FIFO of their own, so they are handled in arrival order.
                comm_id = job.content.get("comm_id")
                self._caller_for(job).queue_call(_Ordered(comm_id, self._run), job)
            case _:
                self._caller_for(job).call_soon(self._run, job)

    def _release(self, job: Job) -> None:
        """A blocking job is done: start the jobs held behind it, up to the next blocking one."""
        key = (job.channel, job.subshell_id)
        while True:
            with self._lock:
                held = self._held.get(key)
                if not held:
                    self._blocked.discard(key)
                    return
                nxt = held.popleft()
            # Started outside the lock: a job that ends at once releases from this same thread.
            self._start(nxt)
            if nxt.run_mode is RunMode.blocking:
                return


class _Ordered:
    """Runs jobs; equal for equal keys, so `queue_call` keeps one FIFO per key."""

    __slots__ = ("key", "run")

    def __init__(self, key: object, run: Callable[[Job], Coroutine[Any, Any, None]]) -> None:
        self.key = key
        self.run = run

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Ordered) and other.key == self.key and other.run == self.run

    def __hash__(self) -> int:
        return hash(self.key)

    def __call__(self, job: Job) -> Coroutine[Any, Any, None]:
        return self.run(job)
