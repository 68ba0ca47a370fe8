"""Comms through the `comm` package, so that ipywidgets and friends work unchanged.

Comm messages can be sent from any thread: each one is a single iopub message, queued to the
socket's owner. The manager's tables are guarded by a lock.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from comm.base_comm import BaseComm, CommManager

if TYPE_CHECKING:
    from async_kernel.wire._outbox import Outbox

__all__ = ("Comm", "KernelCommManager")


class Comm(BaseComm):
    """A comm whose messages go out on the kernel's iopub socket, to the current parent."""

    outbox: Outbox | None = None
    """Where the comm's messages go out; set while a kernel runs."""

    def publish_msg(
        self,
        msg_type: str,
        data: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        buffers: list[bytes] | None = None,
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
