"""The public API: a small façade, one import path per name, `__all__` in every module."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import async_kernel

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(async_kernel.__path__, prefix="async_kernel.")
)
PUBLIC_MODULES = [m for m in MODULES if not any(p.startswith("_") for p in m.split("."))]


def test_the_package_has_the_layers() -> None:
    for package in ("callers", "wire", "output", "requests", "ipython"):
        assert f"async_kernel.{package}" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_all_is_a_tuple_of_existing_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert isinstance(exported, tuple)
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what the module lacks: {missing}"


@pytest.mark.parametrize("name", MODULES)
def test_public_definitions_are_exported(name: str) -> None:
    module = importlib.import_module(name)
    defined = {
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == name
    }
    unexported = defined - set(module.__all__)
    assert not unexported, f"{name} defines public names missing from __all__: {unexported}"


def test_the_facade_is_small_and_documented() -> None:
    names = [n for n in async_kernel.__all__ if n != "__version__"]
    assert 15 <= len(names) <= 25
    assert {"Caller", "Pending", "RunMode", "KernelConcurrencyMode", "get_kernel"} <= set(names)
    undocumented = [n for n in names if not inspect.getdoc(getattr(async_kernel, n))]
    assert not undocumented


def test_each_public_name_has_one_import_path() -> None:
    """The façade's names come from private modules and no other public module exports them."""
    facade = set(async_kernel.__all__)
    for name in PUBLIC_MODULES:
        if name == "async_kernel":
            continue
        again = facade & set(importlib.import_module(name).__all__)
        assert not again, f"{name} exports façade names again: {again}"
    for name in facade - {"__version__"}:
        module = getattr(getattr(async_kernel, name), "__module__", "")
        assert any(p.startswith("_") for p in module.split(".")), (name, module)


def test_version_is_the_one_in_the_package_metadata() -> None:
    """The literal in `_version.py` is what the build wrote into the installed metadata."""
    from importlib.metadata import version

    assert async_kernel.__version__ == version("async-kernel")


def test_each_public_name_has_a_reference_entry() -> None:
    """The API reference (docs/reference) renders every façade name from its docstring."""
    from pathlib import Path

    reference = Path(__file__).parent.parent / "docs" / "reference"
    text = "\n".join(p.read_text() for p in sorted(reference.glob("*.md")))
    entries = set(re.findall(r"^::: async_kernel\.(\w+)\s*$", text, flags=re.MULTILINE))
    names = set(async_kernel.__all__) - {"__version__"}
    assert names - entries == set(), "public names without a reference entry"
    assert entries - names == set(), "reference entries for names that are not public"
    assert "async_kernel.__version__" in text
