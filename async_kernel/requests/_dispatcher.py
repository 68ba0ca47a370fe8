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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from async_kernel._enums import Channel, KernelConcurrencyMode, MsgType, RunMode
from async_kernel.requests._comms import PerKey
from async_kernel.requests._content import request_problem
from async_kernel.requests._subshells import UnknownSubshellError
from async_kernel.wire._job import Job, error_content
from async_kernel.wire._ratelog import RateLimitedLog

if TYPE_CHECKING:
    from collections.abc import Callable

    import aiologic

    from async_kernel.callers._caller import Caller
    from async_kernel.callers._pending import Pending
    from async_kernel.requests._comms import CommRouter
    from async_kernel.requests._runner import JobRunner
    from async_kernel.requests._subshells import SubshellManager
    from async_kernel.wire._session import Message

__all__ = (
    "DEFAULT_RUN_MODES",
    "Aborts",
    "Callers",
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
    MsgType.comm_open: (RunMode.task, RunMode.task),
    MsgType.comm_close: (RunMode.task, RunMode.task),
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
# Comm messages go to their comm's owner in every run mode (the messages of one comm in
# arrival order: trio does not start tasks in the order they were spawned).
_COMM_TYPES = frozenset({MsgType.comm_open, MsgType.comm_msg, MsgType.comm_close})


def execute_override(job: Job) -> RunMode | None:
    """Return the run mode an execute request asks for, strongest first, or None.

    The order is: the code's first line (`##thread` or `RunMode.thread`), a cell tag equal to
    a mode, the metadata's `run_mode`, the header's `run_mode`. A first line that is not
    exactly a mode (`# threading demo`, `##threads`) is an ordinary comment.
    """
    code = job.content.get("code")
    if isinstance(code, str) and code:
        first = code.lstrip("\r\n").split("\n", 1)[0].strip()
        if first.startswith(_MODE_PREFIXES) and (mode := RunMode.get(first)):
            return mode
    for tag in job.tags:
        if (mode := RunMode.get(tag)) and tag == mode.value:
            return mode
    for source in (job.msg.metadata, job.msg.header):
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
        return execute_override(job) or default
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


class Aborts:
    """Arrival numbers per shell and subshell, and which queued executes to answer `aborted`.

    After an error with `stop_on_error`, the executes that arrived before it finished and wait
    behind it in its (sub)shell are aborted; what arrives later runs. Once the kernel stops,
    every execute that has not started yet is aborted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq: dict[tuple[Channel, str | None], int] = {}
        self._aborting: dict[tuple[Channel, str | None], tuple[int, int]] = {}
        self._all = False

    def number(self, job: Job) -> int:
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

    def abort_all(self) -> None:
        """Abort every execute that has not started yet, now and later (the kernel stops)."""
        self._all = True

    def is_aborted(self, job: Job) -> bool:
        """Whether `job` is an execute queued behind an error or a shutdown: answer `aborted`."""
        lo, hi = self._aborting.get((job.channel, job.subshell_id), (0, 0))
        return job.channel is Channel.shell and (self._all or lo < job.seq <= hi)

    def forget(self, subshell_id: str) -> None:
        """Drop the numbers of a deleted subshell."""
        with self._lock:
            for key in [k for k in self._seq if k[1] == subshell_id]:
                self._seq.pop(key, None)
                self._aborting.pop(key, None)


class Dispatcher:
    """Turns each verified message into a job and sends it to its caller in its run mode.

    Holds the jobs of a channel (and subshell) behind a `blocking` one until it is done, and
    counts the jobs that have not finished, so that a shutdown can wait until each request it
    received has been answered.

    Args:
        runner: Runs a job: busy, its handler, a reply, idle.
        callers: Where jobs run: the main shell, control, the `Shell` caller and subshells.
        aborts: Numbers jobs by arrival (for aborts after an error).
        concurrency_mode: Returns the kernel's concurrency mode (it may change at run time).
        on_input_reply: Takes the `input_reply` messages of the stdin channel.
        refusals: Where refused requests (malformed, unknown type) are logged, rate-limited.
        on_finished: Called as `on_finished(idle=...)` each time a job finishes, `idle` when
            no other job is unfinished (on the thread that finished it).
        comms: Sends comm messages to the thread of their comm's owner; without it, they run
            on the shell they were sent to, as other requests do.
    """

    def __init__(
        self,
        runner: JobRunner,
        callers: Callers,
        aborts: Aborts,
        *,
        concurrency_mode: Callable[[], KernelConcurrencyMode],
        on_input_reply: Callable[[Message], None],
        refusals: RateLimitedLog | None = None,
        on_finished: Callable[..., object] | None = None,
        comms: CommRouter | None = None,
    ) -> None:
        self._runner = runner
        self._on_finished = on_finished
        self._comms = comms
        self._callers = callers
        self._aborts = aborts
        self._concurrency_mode = concurrency_mode
        self._on_input_reply = on_input_reply
        self._lock = threading.Lock()
        self._blocked: set[tuple[Channel, str | None]] = set()
        self._held: dict[tuple[Channel, str | None], collections.deque[Job]] = {}
        self._unfinished = 0
        self._all_finished: aiologic.Event | None = None
        self._refusals = refusals or RateLimitedLog(log)

    def receive(self, channel: Channel, msg: Message) -> None:
        """Take a verified message from a socket thread: make its job and submit it.

        A request that cannot run (an unknown type or subshell, a malformed message) becomes a
        rejected job, which still gets `busy`, an error reply (if it is a request) and `idle`.
        """
        if channel is Channel.stdin:
            if msg.msg_type == MsgType.input_reply:
                self._on_input_reply(msg)
            return
        subshell_id = msg.header.get("subshell_id")
        if not isinstance(subshell_id, str) or not subshell_id:
            subshell_id = None  # one that is not a string is the message's `problem`
        job = Job(msg, channel, subshell_id=subshell_id)
        # A malformed message's content is not looked at, not even for a run-mode override.
        mode = run_mode_for(
            msg.msg_type, channel, self._concurrency_mode(), job if msg.problem is None else None
        )
        if mode is None:
            what = f"unknown message type {msg.msg_type!r} on the {channel} channel"
            self._refusals.event("unknown", what)
            job.reject = error_content("UnknownMessageType", what)
        elif (problem := msg.problem or request_problem(msg)) is not None:
            self._refusals.event("malformed", f"refused a malformed {msg.msg_type}: {problem}")
            job.reject = error_content("MalformedMessage", f"malformed {msg.msg_type}: {problem}")
        elif job.subshell_id is not None and job.subshell_id not in self._callers.subshells:
            job.reject = error_content(
                "UnknownSubshellError", str(UnknownSubshellError(job.subshell_id))
            )
        job.run_mode = RunMode.blocking if job.reject is not None else mode
        self._aborts.number(job)
        self.submit(job)

    def submit(self, job: Job) -> None:
        """Start `job` in its run mode, or hold it while a blocking job of its channel runs."""
        key = (job.channel, job.subshell_id)
        with self._lock:
            self._unfinished += 1
            if key in self._blocked:
                self._held.setdefault(key, collections.deque()).append(job)
                return
            if job.run_mode is RunMode.blocking:
                self._blocked.add(key)
        self._start(job)

    async def wait_all_finished(self) -> None:
        """Wait until every job submitted so far has finished (from a loop of either backend).

        A job has finished once its request was answered, or once its caller dropped it.
        """
        with self._lock:
            if not self._unfinished:
                return
            if self._all_finished is None:
                import aiologic  # imported when first needed: it costs ~50 ms at start-up

                self._all_finished = aiologic.Event()
            all_finished = self._all_finished
        await all_finished

    def _finished(self, _: object = None) -> None:
        with self._lock:
            self._unfinished -= 1
            idle = not self._unfinished
            all_finished = None
            if idle:
                all_finished, self._all_finished = self._all_finished, None
        if all_finished is not None:
            all_finished.set()
        if self._on_finished is not None:
            self._on_finished(idle=idle)

    def _start(self, job: Job) -> None:
        try:
            pending = self._launch(job)
        except BaseException:
            self._finished()
            raise
        pending.add_done_callback(self._finished)

    def _launch(self, job: Job) -> Pending[None]:
        run = self._runner.run
        if job.msg_type in _COMM_TYPES and job.reject is None:
            if self._comms is not None:
                pending = self._comms.submit(job, self._callers.caller_for(job))
            else:
                comm_id = job.content.get("comm_id")
                pending = self._callers.caller_for(job).queue_call(PerKey(comm_id, run), job)
            if job.run_mode is RunMode.blocking:
                pending.add_done_callback(lambda _: self._release(job))
            return pending
        match job.run_mode:
            case RunMode.blocking:
                user_code = job.msg_type == MsgType.execute_request
                caller = self._callers.caller_for(job, blocking=not user_code)
                if self._runner.is_sync(job):
                    pending: Pending[None] = caller.call_direct(self._runner.run_now, job)
                else:
                    pending = caller.call_soon(run, job)
                pending.add_done_callback(lambda _: self._release(job))
                return pending
            case RunMode.queue:
                return self._callers.caller_for(job).queue_call(run, job)
            case RunMode.thread:
                return self._callers.caller_for(job).to_thread(run, job)
            case _:
                return self._callers.caller_for(job).call_soon(run, job)

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


@dataclass(slots=True, frozen=True)
class Callers:
    """The callers that jobs run on."""

    main: Caller
    """The main shell's (MainThread): executes and the main shell's other requests."""
    control: Caller
    """The control channel's."""
    shell: Caller
    """Blocking main-shell requests that are not user code (kernel_info, comm_info)."""
    subshells: SubshellManager
    """The subshells, each with a caller of its own."""

    def caller_for(self, job: Job, *, blocking: bool = False) -> Caller:
        """Return the caller of `job`: control's, its subshell's, else the main shell's.

        Args:
            job: The request.
            blocking: It is a `blocking` request that runs no user code, so the main shell's
                share goes to the `Shell` caller, off a main thread that a cell may block.
        """
        if job.channel is Channel.control:
            return self.control
        if job.subshell_id is not None and job.reject is None:
            return self.subshells.caller(job.subshell_id)
        return self.shell if blocking else self.main
