"""The replay guard: the signatures of the most recent messages, to refuse one sent again."""

from __future__ import annotations

import collections
import threading

__all__ = ("ReplayGuard",)

_PER_BUCKET = 16
"""Signatures per bucket when the window is full, on average: a lookup scans about this many."""


class ReplayGuard:
    """Remembers the signatures of the last `window` accepted messages, in fixed memory.

    The signatures sit in small hash buckets (lists of about 16, in arrival order) and in one
    FIFO of arrival. Once the window is full, each new signature drops the oldest, and nothing
    larger than a bucket is ever reallocated. A `set` with this churn collects deleted entries
    and rebuilds its 4 MiB table over and over; glibc then raises its mmap threshold to that
    size and keeps freed memory in its heaps, so the kernel's RSS grew by about 1.5 MiB per
    10,000 messages although no object leaked.

    Args:
        window: How many signatures are remembered.

    Raises:
        ValueError: `window` is below 1.
    """

    __slots__ = ("_buckets", "_lock", "_mask", "_order", "window")

    def __init__(self, window: int) -> None:
        if window < 1:
            msg = f"the replay window must hold at least one signature, not {window}"
            raise ValueError(msg)
        self.window = window
        """How many signatures are remembered."""
        count = 1 << max(0, (window // _PER_BUCKET - 1).bit_length())  # a power of two
        self._mask = count - 1
        self._buckets: list[list[bytes]] = [[] for _ in range(count)]
        self._order: collections.deque[bytes] = collections.deque()
        self._lock = threading.Lock()  # each I/O thread verifies the messages of its sockets

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, signature: object) -> bool:
        return signature in self._buckets[hash(signature) & self._mask]

    def add(self, signature: bytes) -> bool:
        """Remember `signature`; return False if it is remembered already (a replay)."""
        bucket = self._buckets[hash(signature) & self._mask]
        with self._lock:
            if signature in bucket:
                return False
            bucket.append(signature)
            order = self._order
            order.append(signature)
            if len(order) > self.window:
                oldest = order.popleft()
                # A bucket holds its signatures in arrival order: the oldest overall is first.
                del self._buckets[hash(oldest) & self._mask][0]
        return True

    def statistics(self) -> dict[str, int]:
        """Return the window, how many signatures are held, the buckets and the fullest one."""
        with self._lock:
            return {
                "window": self.window,
                "held": len(self._order),
                "buckets": len(self._buckets),
                "largest_bucket": max(map(len, self._buckets)),
            }
