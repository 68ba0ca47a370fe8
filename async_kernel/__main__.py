"""`python -m async_kernel`: the same command as `async-kernel`."""

from __future__ import annotations

from async_kernel.cli import main

__all__ = ()

if __name__ == "__main__":
    raise SystemExit(main())
