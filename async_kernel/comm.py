"""Comms through the `comm` package, so that ipywidgets and friends work unchanged.

Comm messages can be sent from any thread: each one is a single iopub message, queued to the
socket's owner. The manager's tables are guarded by a lock.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import comm
from comm.base_comm import BaseComm, CommManager

if TYPE_CHECKING:
    from async_kernel.kernel import Kernel

__all__ = ("Comm", "KernelCommManager", "install_comms")


class Comm(BaseComm):
    """A comm whose messages go out on the kernel's iopub socket, to the current parent."""

    kernel: Kernel | None = None
    """The kernel that publishes; set by `install_comms`."""

    def publish_msg(
        self,
        msg_type: str,
        data: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        buffers: list[bytes] | None = None,
        **keys: Any,
    ) -> None:
        """Publish a `comm_open`, `comm_msg` or `comm_close` for this comm."""
        kernel = self.kernel
        if kernel is None:
            msg = "the comm has no kernel: call async_kernel.comm.install_comms(kernel) first"
            raise RuntimeError(msg)
        content = {"data": data or {}, "comm_id": self.comm_id, **keys}
        kernel.publish(msg_type, content, metadata=metadata, buffers=buffers)


class KernelCommManager(CommManager):
    """The comm manager, safe to use from any thread."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.RLock()

    def register_target(self, target_name: str, f: Any) -> None:
        """Register `f(comm, msg)` to be called when the client opens a comm for `target_name`."""
        with self._lock:
            super().register_target(target_name, f)

    def unregister_target(self, target_name: str, f: Any) -> Any:
        """Forget a comm target."""
        with self._lock:
            return super().unregister_target(target_name, f)

    def register_comm(self, comm: BaseComm) -> str:
        """Remember an open comm."""
        with self._lock:
            return super().register_comm(comm)

    def unregister_comm(self, comm: BaseComm) -> None:
        """Forget a closed comm."""
        with self._lock:
            self.comms.pop(comm.comm_id, None)

    def comm_info(self, target_name: str | None = None) -> dict[str, dict[str, str]]:
        """Return `{comm_id: {"target_name": ...}}` of the open comms (of one target)."""
        with self._lock:
            comms = list(self.comms.values())
        return {
            c.comm_id: {"target_name": c.target_name}
            for c in comms
            if target_name is None or c.target_name == target_name
        }


def install_comms(kernel: Kernel) -> KernelCommManager:
    """Make `comm.create_comm` and `comm.get_comm_manager` use this kernel."""
    Comm.kernel = kernel
    manager = KernelCommManager()

    def create_comm(*args: Any, **kwargs: Any) -> BaseComm:
        return Comm(*args, **kwargs)

    def get_comm_manager() -> CommManager:
        return manager

    comm.create_comm = create_comm
    comm.get_comm_manager = get_comm_manager
    return manager
