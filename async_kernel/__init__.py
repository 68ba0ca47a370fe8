"""async-kernel: a concurrent Python kernel for Jupyter."""

from __future__ import annotations

__all__ = ("__version__",)

__version__ = "0.1.0"
