"""Comm messages go to the thread of their comm's owner, whatever subshell they came on.

JupyterLab 4.4+ sends widget messages on subshells ("comms over subshells"). Handling them on
those subshells' threads would enter libraries (matplotlib's figure registry behind ipympl,
IPython's display state, ipywidgets) from two threads at once, concurrently with the cell that
builds the next widget. So each comm's messages go where its owner runs (see
`output._comm.CommPolicy`):

* `owner`: into the owner's inbox, which its loop empties whenever it is free (between
  cells, while a cell awaits), and which a cell of the owner empties inside its `time.sleep`
  and while it is stopped in the debugger (*safe points*: the cell waits there, and no other
  code of that thread runs);
* `owner_idle`: the same without the safe points;
* `arrival`: on the (sub)shell the message was sent to, one FIFO per comm.

The messages of one comm are handled in arrival order in every case.
"""

from __future__ import annotations

import collections
import contextvars
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from async_kernel.callers._pending import Pending
from async_kernel.output._comm import MAIN_SHELL, CommPolicy, handling_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from async_kernel.callers._caller import Caller
    from async_kernel.output._comm import KernelCommManager
    from async_kernel.requests._subshells import SubshellManager
    from async_kernel.wire._job import Job

__all__ = ("CommRouter", "Inbox", "PerKey")

log = logging.getLogger("async_kernel")


@dataclass(slots=True)
class _Entry:
    job: Job
    pending: Pending[None]
    context: contextvars.Context
    owner: str | None
    at_safe_points: bool


class Inbox:
    """The comm messages one owner has yet to handle, run on the owner's thread in order.

    Its loop drains it from the scheduler; a cell of the owner drains it inside `time.sleep`
    (`run_at_safe_point`). Both run on the owner's thread, never one inside the other.
    """

    def __init__(
        self,
        caller: Caller,
        run: Callable[[_Entry, bool], None],
        when_stopped: Callable[[Inbox], object],
    ) -> None:
        self.caller = caller
        self._run = run
        self._when_stopped = when_stopped
        self._lock = threading.Lock()
        self._entries: collections.deque[_Entry] = collections.deque()
        self._drain_scheduled = False
        self._running = False  # only touched on the owner's thread
        self.sleeper: threading.Event | None = None
        """Set by `put` for a safe-point message: the owner's cell waits on it in `time.sleep`."""

    def put(self, entry: _Entry) -> None:
        """Add a message (from any thread) and make sure the owner's loop will drain it.

        Raises:
            RuntimeError: The owner's caller is closed (the message was not added).
        """
        with self._lock:
            self._entries.append(entry)
            schedule = not self._drain_scheduled
            self._drain_scheduled = True
            sleeper = self.sleeper if entry.at_safe_points else None
        if sleeper is not None:
            sleeper.set()
        if entry.at_safe_points:
            self._when_stopped(self)
        if schedule:
            try:
                self._schedule()
            except RuntimeError:
                with self._lock:
                    if entry in self._entries:
                        self._entries.remove(entry)
                raise

    def take_all(self) -> list[_Entry]:
        """Remove and return the messages not handled yet (the owner goes away)."""
        with self._lock:
            entries = list(self._entries)
            self._entries.clear()
            return entries

    def _schedule(self) -> None:
        # Handlers are synchronous: run in the loop's scheduler (as blocking requests are),
        # one message per turn of the loop, so other tasks run between them.
        try:
            self.caller.call_direct(self._drain_one)
        except RuntimeError:
            with self._lock:
                self._drain_scheduled = False
            raise

    def _drain_one(self) -> None:
        with self._lock:
            if not self._entries:
                self._drain_scheduled = False
                return
            entry = self._entries.popleft()
        try:
            self._handle(entry, safe_point=False)
        finally:
            with self._lock:
                more = bool(self._entries)
                if not more:
                    self._drain_scheduled = False
            if more:
                self._schedule()

    def ready(self) -> bool:
        """Whether a message waits that a safe point may run (and none runs on this thread)."""
        if self._running:
            return False
        with self._lock:
            return any(e.at_safe_points for e in self._entries)

    def run_at_safe_point(self) -> None:
        """Run the messages that may run inside a cell (call it from the owner's thread)."""
        if self._running:
            return  # a handler's own time.sleep: the messages after it wait for it
        while True:
            with self._lock:
                entry = next((e for e in self._entries if e.at_safe_points), None)
                if entry is None:
                    return
                self._entries.remove(entry)
            self._handle(entry, safe_point=True)

    def _handle(self, entry: _Entry, *, safe_point: bool) -> None:
        self._running = True
        try:
            self._run(entry, safe_point)
        finally:
            self._running = False
            entry.pending.set_result(None)


class CommRouter:
    """Sends every `comm_open`, `comm_msg` and `comm_close` to the thread that handles it.

    Args:
        comms: Knows each comm's owner and policy.
        run_now: Runs a request with a synchronous handler (busy, handler, idle).
        main: The main shell's caller.
        subshells: The subshells, for owners that are subshells.
        when_stopped: Given an owner's inbox with messages for safe points, has the owner's
            thread handle them if it is stopped in the debugger (returns whether it will).
    """

    def __init__(
        self,
        comms: KernelCommManager,
        run_now: Callable[[Job], None],
        main: Caller,
        subshells: SubshellManager,
        when_stopped: Callable[[Inbox], bool] = lambda _: False,
    ) -> None:
        self._when_stopped = when_stopped
        self._comms = comms
        self._run_now = run_now
        self._main = main
        self._subshells = subshells
        self._lock = threading.Lock()
        self._inboxes: dict[str | None, Inbox] = {}
        self._by_thread: dict[int, Inbox] = {}

    def submit(self, job: Job, arrival: Caller) -> Pending[None]:
        """Start handling a comm message; `arrival` is the caller of the shell it came on."""
        owner, policy = self._comms.route(job.msg_type, job.content)
        if policy is CommPolicy.arrival:
            return arrival.queue_call(PerKey(job.content.get("comm_id"), self._run), owner, job)
        entry = _Entry(
            job, Pending(), contextvars.copy_context(), owner, policy is CommPolicy.owner
        )
        self._put(entry)
        return entry.pending

    def work_here(self) -> Inbox | None:
        """The inbox of the owner whose thread this is, if it has one."""
        return self._by_thread.get(threading.get_ident())

    def debugger_stopped(self) -> None:
        """A thread stopped in the debugger: its owner's waiting messages are handled there."""
        with self._lock:
            inboxes = list(self._inboxes.values())
        for inbox in inboxes:
            if inbox.ready():
                self._when_stopped(inbox)

    def forget(self, subshell_id: str) -> None:
        """A subshell was deleted: its comms now belong to the main shell, with their messages."""
        self._comms.move_owner(subshell_id, MAIN_SHELL)
        with self._lock:
            inbox = self._inboxes.pop(subshell_id, None)
            if inbox is not None:
                self._by_thread = {t: i for t, i in self._by_thread.items() if i is not inbox}
        for entry in inbox.take_all() if inbox is not None else ():
            entry.owner = MAIN_SHELL
            self._put(entry)

    def _put(self, entry: _Entry) -> None:
        try:
            self._inbox(entry.owner).put(entry)
        except RuntimeError:  # the subshell is closing: the main shell takes over
            log.info("comm message for a closed subshell %s handled by the main shell", entry.owner)
            entry.owner = MAIN_SHELL
            self._inbox(MAIN_SHELL).put(entry)

    def _inbox(self, owner: str | None) -> Inbox:
        with self._lock:
            inbox = self._inboxes.get(owner)
            if inbox is not None:
                return inbox
            if owner is None or owner not in self._subshells:
                return self._inbox_unlocked(MAIN_SHELL, self._main)
            return self._inbox_unlocked(owner, self._subshells.caller(owner))

    def _inbox_unlocked(self, owner: str | None, caller: Caller) -> Inbox:
        inbox = self._inboxes.get(owner)
        if inbox is None:
            inbox = self._inboxes[owner] = Inbox(caller, self._run_entry, self._when_stopped)
            if caller.ident is not None:
                self._by_thread = {**self._by_thread, caller.ident: inbox}
        return inbox

    def _run_entry(self, entry: _Entry, safe_point: bool) -> None:
        entry.context.run(self._run_in_context, entry, safe_point)

    def _run_in_context(self, entry: _Entry, safe_point: bool) -> None:
        with handling_for(entry.owner, safe_point=safe_point):
            self._run_now(entry.job)

    def _run(self, owner: str | None, job: Job) -> None:
        with handling_for(owner):
            self._run_now(job)


class PerKey:
    """Calls `run`; equal for equal keys, so `Caller.queue_call` keeps one FIFO per key."""

    __slots__ = ("key", "run")

    def __init__(self, key: object, run: Callable[..., Any]) -> None:
        self.key = key
        self.run = run

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PerKey) and other.key == self.key and other.run == self.run

    def __hash__(self) -> int:
        return hash(self.key)

    def __call__(self, *args: Any) -> Any:
        return self.run(*args)
