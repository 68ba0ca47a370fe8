"""Every module declares `__all__` as a tuple, and it matches what the module defines."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import async_kernel

MODULES = sorted(
    info.name for info in pkgutil.iter_modules(async_kernel.__path__, prefix="async_kernel.")
)


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


def test_package_exports_the_core_api() -> None:
    assert {"Caller", "Pending", "RunMode", "KernelConcurrencyMode"} <= set(async_kernel.__all__)
