"""Subshells (JEP 91): extra shells on their own threads that share the user namespace."""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING

from async_kernel.callers._caller import Caller

if TYPE_CHECKING:
    from collections.abc import Callable

    from async_kernel.callers._caller import Backend

__all__ = ("SubshellManager", "UnknownSubshellError")


class UnknownSubshellError(KeyError):
    """A request named a subshell that does not exist (or no longer does)."""

    def __str__(self) -> str:
        return f"no subshell with id {self.args[0]!r}; create one with create_subshell_request"


class SubshellManager:
    """Creates, finds and deletes subshells; each one is a `Caller` on a thread of its own.

    Args:
        backend: The async backend of the subshells' loops.
        on_delete: Called with the id of each deleted subshell.
    """

    def __init__(self, backend: Backend, on_delete: Callable[[str], None] | None = None) -> None:
        self.backend: Backend = backend
        self.on_delete = on_delete
        """Called with the id of each deleted subshell."""
        self._subshells: dict[str, Caller] = {}
        self._lock = threading.Lock()

    def create(self) -> str:
        """Start a new subshell and return its id."""
        subshell_id = uuid.uuid4().hex
        caller = Caller.start_new(name=f"subshell-{subshell_id[:8]}", backend=self.backend)
        with self._lock:
            self._subshells[subshell_id] = caller
        return subshell_id

    def delete(self, subshell_id: str) -> None:
        """Stop a subshell's thread and forget it.

        Raises:
            UnknownSubshellError: There is no such subshell.
        """
        with self._lock:
            caller = self._subshells.pop(subshell_id, None)
        if caller is None:
            raise UnknownSubshellError(subshell_id)
        caller.stop(force=True)
        if self.on_delete is not None:
            self.on_delete(subshell_id)

    def ids(self) -> list[str]:
        """Return the ids of the subshells, oldest first."""
        with self._lock:
            return list(self._subshells)

    def caller(self, subshell_id: str) -> Caller:
        """Return the caller of a subshell.

        Raises:
            UnknownSubshellError: There is no such subshell.
        """
        try:
            return self._subshells[subshell_id]
        except KeyError:
            raise UnknownSubshellError(subshell_id) from None

    def __contains__(self, subshell_id: object) -> bool:
        return subshell_id in self._subshells

    def stop_all(self) -> None:
        """Delete every subshell (at shutdown)."""
        for subshell_id in self.ids():
            self.delete(subshell_id)
