"""Cell file names: ipykernel's murmur2 hash of the source, its seed, directory and suffix."""

from __future__ import annotations

import linecache
import os
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from async_kernel.ipython import _cellnames
from async_kernel.ipython._cellnames import (
    CELL_NAME_ENV,
    HASH_SEED,
    CellCompiler,
    cell_file_name,
    file_prefix,
    murmur2_x86,
    tmp_directory,
)

__all__ = ()

# Computed with ipykernel 7.4's `ipykernel.compiler.murmur2_x86(code, get_tmp_hash_seed())`.
KNOWN = {
    "": 3990065800,
    "a": 2167009006,
    "ab": 2805137849,
    "abc": 3350977461,
    "abcd": 804720481,
    "abcde": 730143326,
    "print(1)": 3773950048,
    "1 +": 1278102326,
    "x = 1\nprint(x)\n": 1538517086,
    "é€😀": 3159310966,
    "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])": 1874242169,
}


@pytest.mark.parametrize(("source", "expected"), KNOWN.items())
def test_hash_matches_ipykernel_values(source: str, expected: int) -> None:
    assert murmur2_x86(source, HASH_SEED) == expected
    assert murmur2_x86(source.encode(), HASH_SEED) == expected


def test_hash_depends_on_the_seed() -> None:
    assert murmur2_x86("abc", 0) == 324500635
    assert murmur2_x86("abc", 0) != murmur2_x86("abc", HASH_SEED)


@given(st.text())
def test_hash_agrees_with_ipykernel(source: str) -> None:
    compiler = pytest.importorskip("ipykernel.compiler")
    assert murmur2_x86(source, HASH_SEED) == compiler.murmur2_x86(source, HASH_SEED)


def test_names_live_in_ipykernels_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CELL_NAME_ENV, raising=False)
    directory = os.path.join(tempfile.gettempdir(), f"ipykernel_{os.getpid()}")
    assert tmp_directory() == directory
    assert file_prefix() == directory + os.sep
    assert cell_file_name("print(1)") == f"{directory}{os.sep}3773950048.py"
    assert _cellnames.HASH_METHOD == "Murmur2"
    assert _cellnames.FILE_SUFFIX == ".py"


def test_the_environment_can_name_every_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CELL_NAME_ENV, "/somewhere/cell.py")
    assert cell_file_name("print(1)") == "/somewhere/cell.py"


def test_compiler_caches_source_under_the_hashed_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CELL_NAME_ENV, raising=False)
    compiler = CellCompiler()
    raw = "x = 1\nprint(x)\n"
    name = compiler.cache("x = 1\nprint(x)\n", 7, raw_code=raw)
    assert name == cell_file_name(raw)
    assert linecache.getline(name, 2) == "print(x)\n"
    assert compiler.format_code_name(name) == ("Cell", "In[7]")
    code = compiler(raw, name, "exec")
    assert code.co_filename == name
