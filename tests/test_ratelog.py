"""Unit tests of `async_kernel.wire._ratelog`: a flood of events is a few log lines."""

from __future__ import annotations

import logging
import threading

import pytest

from async_kernel.wire._ratelog import RateLimitedLog

LOGGER = logging.getLogger("async_kernel.tests.ratelog")


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ratelog(clock: Clock) -> RateLimitedLog:
    return RateLimitedLog(LOGGER, interval=10, clock=clock)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER.name]


def test_the_first_event_of_a_kind_is_logged_then_only_counts(
    ratelog: RateLimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER.name)
    for i in range(1000):
        ratelog.event("signature", f"dropped message {i}")
    assert lines(caplog) == [
        "dropped message 0 (later ones of this kind are counted, reported at most every 10 s)"
    ]
    assert ratelog.counts() == {"signature": 999}
    clock.now += 9.9
    ratelog.event("signature", "dropped message 1000")
    assert len(lines(caplog)) == 1  # not yet: the interval has not passed
    clock.now += 0.1
    ratelog.event("signature", "dropped message 1001")
    assert lines(caplog)[1:] == [
        "1001 more of kind 'signature' in the last 10 s; the latest: dropped message 1001"
    ]
    assert ratelog.counts() == {"signature": 0}
    assert caplog.records[-1].levelno == logging.WARNING


def test_kinds_are_counted_apart(
    ratelog: RateLimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER.name)
    for kind in ("signature", "framing", "signature", "replay", "framing"):
        ratelog.event(kind, f"a {kind} drop")
    assert [line.split(" (")[0] for line in lines(caplog)] == [
        "a signature drop",
        "a framing drop",
        "a replay drop",
    ]
    assert ratelog.counts() == {"signature": 1, "framing": 1, "replay": 0}


def test_flush_reports_what_is_not_reported_yet(
    ratelog: RateLimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER.name)
    ratelog.event("replay", "first")
    ratelog.flush()
    assert len(lines(caplog)) == 1  # nothing more to say
    for i in range(3):
        ratelog.event("replay", f"later {i}")
    clock.now += 2
    ratelog.flush()
    assert lines(caplog)[1:] == ["3 more of kind 'replay' in the last 2 s; the latest: later 2"]
    assert ratelog.counts() == {"replay": 0}


def test_events_from_many_threads_are_all_counted(
    ratelog: RateLimitedLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER.name)
    barrier = threading.Barrier(8)

    def flood() -> None:
        barrier.wait(10)
        for _ in range(500):
            ratelog.event("framing", "junk")

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(lines(caplog)) == 1
    assert ratelog.counts() == {"framing": 8 * 500 - 1}
