"""The wire: sessions (signing, framing), the connection file, the sockets, and the outbox.

Bytes come in on the socket thread and leave as `Job`s; everything the kernel sends goes
through the `Outbox`, which signs, frames and queues it for the socket thread.
"""

__all__ = ()
