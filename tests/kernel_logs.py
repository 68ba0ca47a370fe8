"""The stderr of a kernel process, written to a file: wait until a line says something."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ("wait_for_log",)


def wait_for_log(
    log: Path, *texts: str, timeout: float, alive: Callable[[], bool] | None = None
) -> str:
    """Wait until one line of `log` contains every one of `texts`; return that line.

    Args:
        log: The file the kernel's stderr goes to.
        texts: What the line must contain.
        timeout: Seconds before the test fails, showing the whole log.
        alive: Returns whether the kernel still runs; the wait fails at once when it does not.
    """
    deadline = time.monotonic() + timeout
    while True:
        content = log.read_text(errors="replace") if log.exists() else ""
        for line in content.splitlines():
            if all(text in line for text in texts):
                return line
        assert alive is None or alive(), f"the kernel exited; its log: {content}"
        assert time.monotonic() < deadline, f"no line with {texts!r} in the log: {content}"
        time.sleep(0.05)  # polling a file with a deadline, not ordering events
