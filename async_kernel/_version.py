"""The version of async-kernel: the one place it is written (hatchling reads it at build time).

A literal rather than a look-up in the installed package's metadata: `importlib.metadata`
costs a kernel some 20 ms of start-up, and the build copies this value into that metadata.
"""

from __future__ import annotations

__all__ = ("__version__",)

__version__ = "0.1.0"
