"""The file names cells are compiled under: ipykernel's, a murmur2 hash of the cell's source.

A cell's code objects, tracebacks and `SyntaxError`s name the file
`<temp dir>/ipykernel_<pid>/<murmur2 hash of the source>.py`, exactly as ipykernel names them.
Debugger clients (JupyterLab, VS Code) compute the same name from the cell's source, the
hash seed and the prefix and suffix the kernel reports in `debugInfo`; `executing` and
`stack_data` (IPython's traceback helpers) recognise cells by the `ipykernel_<pid>` directory.
The environment variable `IPYKERNEL_CELL_NAME`, when set, names every cell (as in ipykernel).
"""

from __future__ import annotations

import array
import functools
import os
import sys
import tempfile

from IPython.core.compilerop import CachingCompiler

__all__ = (
    "CELL_NAME_ENV",
    "FILE_SUFFIX",
    "HASH_METHOD",
    "HASH_SEED",
    "CellCompiler",
    "cell_file_name",
    "file_prefix",
    "murmur2_x86",
    "tmp_directory",
)

HASH_METHOD = "Murmur2"
"""The hash of a cell's source, as the debug protocol's `debugInfo` names it."""
HASH_SEED = 0xC70F6907
"""The seed of the hash (ipykernel's)."""
FILE_SUFFIX = ".py"
"""What follows the hash in a cell's file name."""
CELL_NAME_ENV = "IPYKERNEL_CELL_NAME"
"""An environment variable that, when set, is the file name of every cell."""

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2_x86(data: str | bytes, seed: int) -> int:
    """Return the 32-bit MurmurHash2 of `data` (a str is hashed as its UTF-8 bytes).

    Args:
        data: What to hash.
        seed: The hash seed.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    length = len(raw)
    whole = length - length % 4
    words = array.array("I", raw[:whole])  # the 4-byte blocks, read at C speed
    if sys.byteorder == "big":
        words.byteswap()
    h = (seed ^ length) & _MASK
    for k in words:
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    if tail := raw[whole:]:
        h ^= int.from_bytes(tail, "little")
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def tmp_directory() -> str:
    """Return the directory cell files are named in: `<temp dir>/ipykernel_<pid>`."""
    return os.path.join(tempfile.gettempdir(), f"ipykernel_{os.getpid()}")


_prefix: tuple[int, str] = (-1, "")  # the process id it was made for, and the prefix


def file_prefix() -> str:
    """Return what precedes the hash in a cell's file name (the directory and a separator)."""
    global _prefix
    pid = os.getpid()
    if _prefix[0] != pid:  # first use, or a forked child: its own directory
        _prefix = (pid, tmp_directory() + os.sep)
    return _prefix[1]


def cell_file_name(code: str) -> str:
    """Return the file name a cell with source `code` is compiled under."""
    name = os.environ.get(CELL_NAME_ENV)
    if name is not None:
        return name
    return f"{file_prefix()}{_hash(code)}{FILE_SUFFIX}"


@functools.lru_cache(maxsize=256)
def _hash(code: str) -> int:
    # Cells are often run again unchanged; the hash is pure Python (~1 ms for 10 kB).
    return murmur2_x86(code, HASH_SEED)


class CellCompiler(CachingCompiler):
    """IPython's caching compiler, naming each cell by `cell_file_name` of its raw source.

    The source still goes into `linecache` under that name, so tracebacks show the lines, and
    IPython still shows the cell as `Cell In[N]` in tracebacks.
    """

    def get_code_name(self, raw_code: str, transformed_code: str, number: int) -> str:
        """Return the file name of the cell whose raw source is `raw_code`."""
        return cell_file_name(raw_code)
