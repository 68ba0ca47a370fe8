"""The replay guard: exact within its window, fixed memory once full."""

from __future__ import annotations

import itertools
import tracemalloc
from typing import TYPE_CHECKING

import pytest

from async_kernel.wire._replay import ReplayGuard

if TYPE_CHECKING:
    from collections.abc import Iterator


def signatures(start: int = 0) -> Iterator[bytes]:
    """Distinct 64-character signatures, as HMAC-SHA256 hex digests look."""
    return (f"{i:064x}".encode() for i in itertools.count(start))


def test_a_signature_is_refused_while_in_the_window() -> None:
    guard = ReplayGuard(100)
    sigs = list(itertools.islice(signatures(), 100))
    assert all(guard.add(s) for s in sigs)
    assert not any(guard.add(s) for s in sigs)  # every one of the window, also the oldest
    assert len(guard) == 100


def test_the_oldest_signature_is_forgotten_first() -> None:
    guard = ReplayGuard(100)
    sigs = list(itertools.islice(signatures(), 150))
    for s in sigs:
        assert guard.add(s)
    assert len(guard) == 100
    assert all(s not in guard for s in sigs[:50])
    assert all(s in guard for s in sigs[50:])
    assert guard.add(sigs[0])  # forgotten, so accepted (and now the newest)
    assert sigs[50] not in guard


@pytest.mark.parametrize("window", [1, 2, 17, 65536])
def test_buckets_stay_small(window: int) -> None:
    guard = ReplayGuard(window)
    for s in itertools.islice(signatures(), 3 * window):
        guard.add(s)
    stats = guard.statistics()
    assert stats["held"] == window
    assert stats["buckets"] & (stats["buckets"] - 1) == 0  # a power of two
    assert stats["buckets"] * 16 >= window // 2
    assert stats["largest_bucket"] <= 64


def test_window_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ReplayGuard(0)


def test_memory_is_fixed_once_full() -> None:
    """Once full, the guard allocates nothing large and does not grow.

    A `set` with the same churn rebuilds its table (4 MiB at this window) every ~90,000
    signatures (and glibc then keeps freed memory around): 4 MiB more are traced. Here only
    bucket lists are reallocated (at most ~800 KiB of them, all small).
    """
    window = 65536
    guard = ReplayGuard(window)
    source = signatures()
    for s in itertools.islice(source, 2 * window):
        guard.add(s)
    # Made before the measurement; the first half is untimed, so that the blocks the guard
    # holds are all traced (tracemalloc does not see the blocks freed that it never saw made).
    warm, churn = (list(itertools.islice(source, window)) for _ in range(2))
    tracemalloc.start()
    try:
        for s in warm:
            guard.add(s)
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        for s in churn:
            guard.add(s)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(guard) == window
    assert after - before < 1024 * 1024
    assert peak - after < 64 * 1024
