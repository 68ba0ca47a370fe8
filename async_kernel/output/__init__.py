"""Output: which cell an output belongs to, streams, `input()` over stdin, and comms."""

__all__ = ()
