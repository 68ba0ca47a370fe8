"""Comms through the `comm` package, so that ipywidgets and friends work unchanged.

Comm messages can be sent from any thread: each one is a single iopub message, queued to the
socket's owner. The manager's tables are guarded by a lock.

Every comm has an *owner*, the shell whose code created it: the main shell (None) or a
subshell (its id). The kernel runs a comm's handlers (its target, `on_msg` and `on_close`)
on its owner's thread, as `CommPolicy` says, whichever subshell the frontend sent the message
on. The manager records the owners and the policies; the request layer routes the messages.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import logging
import threading
from typing import TYPE_CHECKING, Any, Final

from comm.base_comm import BaseComm, CommManager

from async_kernel.wire._job import current_job

if TYPE_CHECKING:
    from collections.abc import Generator, Sequence

    from async_kernel.wire._outbox import Outbox

__all__ = (
    "MAIN_SHELL",
    "Comm",
    "CommPolicy",
    "KernelCommManager",
    "at_safe_point",
    "current_owner",
    "handling_for",
    "set_comm_policy",
)

log = logging.getLogger("Comm")

MAIN_SHELL: Final = None
"""The owner key of the main shell (a subshell's key is its id)."""


class CommPolicy(enum.StrEnum):
    """Which thread runs a comm's handlers: its target, `on_msg` and `on_close` callbacks."""

    owner = "owner"
    """The owner's thread: when its loop is free, and inside its running cell's `time.sleep`."""
    owner_idle = "owner_idle"
    """The owner's thread, only when its loop is free: never inside a running cell."""
    arrival = "arrival"
    """The thread of the (sub)shell the message was sent to: for thread-safe handlers."""


_UNSET: Final = object()
# The owner of the comm whose handler runs in this context: comms it creates belong there too.
_handling: contextvars.ContextVar[object] = contextvars.ContextVar(
    "async_kernel_comm_owner", default=_UNSET
)
# Set while comm handlers run inside a cell's `time.sleep` (a safe point) of the same thread.
_safe_point: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "async_kernel_comm_safe_point", default=False
)


def current_owner() -> str | None:
    """The owner a comm or target created here gets: the shell of the code that runs now.

    The owner of the comm whose handler is running (a widget made by a widget's callback
    belongs where its parent does), else the (sub)shell of the current request, else the main
    shell (code without a request: a plain thread, an import).
    """
    owner = _handling.get()
    if owner is not _UNSET:
        return owner  # pyright: ignore[reportReturnType]
    job = current_job.get()
    return job.subshell_id if job is not None else MAIN_SHELL


@contextlib.contextmanager
def handling_for(owner: str | None, *, safe_point: bool = False) -> Generator[None]:
    """Run a block as the handler of a comm of `owner` (at a cell's safe point, or not)."""
    token = _handling.set(owner)
    safe = _safe_point.set(safe_point)
    try:
        yield
    finally:
        _safe_point.reset(safe)
        _handling.reset(token)


def at_safe_point() -> bool:
    """Whether a comm handler runs here inside a running cell's `time.sleep`.

    The comm package triggers IPython's `pre_execute` and `post_execute` around `on_msg`
    callbacks; inside a cell that would flush the cell's pending displays (new ipympl figures)
    under the comm message, so the shell skips them there: the cell's own end triggers them.
    """
    return _safe_point.get()


class Comm(BaseComm):
    """A comm whose messages go out on the kernel's iopub socket, to the current parent."""

    outbox: Outbox | None = None
    """Where the comm's messages go out; set while a kernel runs."""

    def publish_msg(
        self,
        msg_type: str,
        data: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        buffers: Sequence[object] | None = None,
        **keys: Any,
    ) -> None:
        """Publish a `comm_open`, `comm_msg` or `comm_close` for this comm."""
        outbox = self.outbox
        if outbox is None:
            msg = "comms need a running async-kernel: no kernel has installed them"
            raise RuntimeError(msg)
        content = {"data": data or {}, "comm_id": self.comm_id, **keys}
        outbox.publish(msg_type, content, metadata=metadata, buffers=buffers)


class KernelCommManager(CommManager):
    """The comm manager, safe to use from any thread; it knows each comm's owner and policy.

    Args:
        policy: The kernel-wide `CommPolicy`, for comms and targets that have none of their own.
    """

    def __init__(self, policy: CommPolicy = CommPolicy.owner, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.RLock()
        self.policy = CommPolicy(policy)
        """The kernel-wide policy (`Kernel.comm_policy`)."""
        self._owners: dict[str, str | None] = {}
        self._target_owners: dict[str, str | None] = {}
        self._policies: dict[str, CommPolicy] = {}
        self._target_policies: dict[str, CommPolicy] = {}

    def register_target(
        self, target_name: str, f: Any, *, policy: CommPolicy | str | None = None
    ) -> None:
        """Register `f(comm, msg)`, called when the client opens a comm for `target_name`.

        The comms the client opens for it belong to the shell that registers the target.

        Args:
            target_name: The target's name.
            f: The callable, or the import string of one.
            policy: The `CommPolicy` of the target's comms (None: the kernel's).
        """
        with self._lock:
            super().register_target(target_name, f)
            self._target_owners[target_name] = current_owner()
            if policy is not None:
                self._target_policies[target_name] = CommPolicy(policy)

    def unregister_target(self, target_name: str, f: Any) -> Any:
        """Forget a comm target."""
        with self._lock:
            self._target_owners.pop(target_name, None)
            return super().unregister_target(target_name, f)

    def register_comm(self, comm: BaseComm) -> str:
        """Remember an open comm and its owner (the shell whose code opens it)."""
        with self._lock:
            self._owners.setdefault(comm.comm_id, current_owner())
            return super().register_comm(comm)

    def unregister_comm(self, comm: BaseComm) -> None:
        """Forget a closed comm."""
        with self._lock:
            self._forget(comm.comm_id)

    def comm_close(self, stream: Any, ident: Any, msg: dict[str, Any]) -> None:
        """The client closes a comm: forget it, then call its `on_close` callback."""
        comm_id = msg["content"]["comm_id"]
        with self._lock:
            comm = self.comms.get(comm_id)
            if comm is not None:
                comm._closed = True  # pyright: ignore[reportPrivateUsage]
                self._forget(comm_id)
        if comm is None:
            log.warning("No such comm: %s", comm_id)
            return
        try:
            comm.handle_close(msg)
        except Exception:
            log.exception("Exception in comm_close for %s", comm_id)

    def _forget(self, comm_id: str) -> None:
        self.comms.pop(comm_id, None)
        self._owners.pop(comm_id, None)
        self._policies.pop(comm_id, None)

    def set_policy(self, what: BaseComm | str, policy: CommPolicy | str | None) -> None:
        """Set the policy of one comm, or of every comm of a target (by its name).

        None removes it: the target's policy, else the kernel's, applies again.
        """
        table = self._target_policies if isinstance(what, str) else self._policies
        key = what if isinstance(what, str) else what.comm_id
        with self._lock:
            if policy is None:
                table.pop(key, None)
            else:
                table[key] = CommPolicy(policy)

    def route(self, msg_type: str, content: dict[str, Any]) -> tuple[str | None, CommPolicy]:
        """Return the owner and the policy of the comm a `comm_*` message is for.

        A `comm_open` from the client makes a comm of its target's owner (the main shell for a
        target nobody registered); the owner is recorded now, so the comm's next messages go
        to the same place even before the open is handled.
        """
        comm_id = content.get("comm_id")
        with self._lock:
            if msg_type == "comm_open":
                target = content.get("target_name")
                owner = self._target_owners.get(target) if isinstance(target, str) else None
                if isinstance(comm_id, str):
                    self._owners.setdefault(comm_id, owner)
            else:
                owner = self._owners.get(comm_id) if isinstance(comm_id, str) else None
                comm = self.comms.get(comm_id) if isinstance(comm_id, str) else None
                target = comm.target_name if comm is not None else None
            policy = (
                (self._policies.get(comm_id) if isinstance(comm_id, str) else None)
                or (self._target_policies.get(target) if isinstance(target, str) else None)
                or self.policy
            )
        return owner, policy

    def move_owner(self, old: str, new: str | None) -> None:
        """Give the comms and targets of a deleted subshell `old` to `new`."""
        with self._lock:
            for table in (self._owners, self._target_owners):
                for key, owner in table.items():
                    if owner == old:
                        table[key] = new

    def comm_info(self, target_name: str | None = None) -> dict[str, dict[str, str]]:
        """Return `{comm_id: {"target_name": ...}}` of the open comms (of one target)."""
        with self._lock:
            comms = list(self.comms.values())
        return {
            c.comm_id: {"target_name": c.target_name}
            for c in comms
            if target_name is None or c.target_name == target_name
        }


def set_comm_policy(what: object, policy: CommPolicy | str | None) -> None:
    """Choose which thread runs the handlers of a comm, or of every comm of a target.

    Args:
        what: A comm, an object with a `comm` (an ipywidgets widget), or a target's name.
        policy: A `CommPolicy` (or its name); None goes back to the target's or the kernel's.

    Raises:
        RuntimeError: No async-kernel runs in this process.
        TypeError: `what` is neither a comm, nor has one, nor is a target name.
    """
    import comm as comm_package

    manager = comm_package.get_comm_manager()
    if not isinstance(manager, KernelCommManager):
        msg = "set_comm_policy needs a running async-kernel (comm's manager is not its own)"
        raise RuntimeError(msg)
    target = what if isinstance(what, (str, BaseComm)) else getattr(what, "comm", None)
    if not isinstance(target, (str, BaseComm)):
        msg = f"expected a comm, an object with a comm (a widget) or a target name, got {what!r}"
        raise TypeError(msg)
    manager.set_policy(target, policy)
