"""A log for events that can come in floods: dropped and malformed messages.

Whoever can reach a kernel's ports can send it junk as fast as the network carries it; a log
line per message would turn that into a disk-filling attack and bury everything else. So the
first event of each kind is logged at once, and after that only how many more came, at most
once per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("RateLimitedLog",)


class RateLimitedLog:
    """Logs the first event of each kind, then a count of the later ones per `interval`.

    A count is written when an event comes after the interval has passed, and by `flush`
    (at shutdown), so nothing goes unreported.

    Args:
        logger: Where the lines go.
        interval: The fewest seconds between two lines about one kind.
        level: The level of the lines.
        clock: Returns the time in seconds (`time.monotonic`; tests pass their own).
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 60.0,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.level = level
        self._clock = clock
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}
        self._unreported: dict[str, int] = {}
        self._latest: dict[str, str] = {}

    def event(self, kind: str, message: str) -> None:
        """Record one event of `kind`; log it if it is the first, or a count if one is due."""
        now = self._clock()
        with self._lock:
            since = self._since.get(kind)
            if since is not None:
                self._unreported[kind] += 1
                self._latest[kind] = message
                if now - since < self.interval:
                    return
                count, self._unreported[kind] = self._unreported[kind], 0
            else:
                count = 0
                self._unreported[kind] = 0
            self._since[kind] = now
        if count:
            self._report(kind, count, now - since if since is not None else 0.0, message)
        else:
            self.logger.log(
                self.level,
                "%s (later ones of this kind are counted, reported at most every %g s)",
                message,
                self.interval,
            )

    def flush(self) -> None:
        """Log the counts that are not reported yet."""
        now = self._clock()
        with self._lock:
            due = [(kind, n) for kind, n in self._unreported.items() if n]
            for kind, _ in due:
                self._unreported[kind] = 0
            pending = [(kind, n, now - self._since[kind], self._latest[kind]) for kind, n in due]
            for kind, _ in due:
                self._since[kind] = now
        for kind, count, seconds, latest in pending:
            self._report(kind, count, seconds, latest)

    def counts(self) -> dict[str, int]:
        """Return the number of events of each kind that are not reported yet."""
        with self._lock:
            return dict(self._unreported)

    def _report(self, kind: str, count: int, seconds: float, latest: str) -> None:
        self.logger.log(
            self.level,
            "%d more of kind %r in the last %.0f s; the latest: %s",
            count,
            kind,
            seconds,
            latest,
        )
