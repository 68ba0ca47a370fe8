"""Requests: the dispatcher, the runner, the handlers, interrupts and subshells.

A `Job` is given a run mode and a caller by the dispatcher, wrapped by the runner (busy, the
handler, a reply, idle) and handled by the method named like its `msg_type`.
"""

__all__ = ()
