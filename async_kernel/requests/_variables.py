"""The user's variables as DAP `variables`, for when no thread is stopped in the debugger.

JupyterLab's variables panel asks `inspectVariables` while nothing is stopped: the kernel
answers from the user namespace itself (a stopped thread's variables come from debugpy).
Containers get a `variablesReference`, and a later `variables` request with that reference
lists their children; the references stay valid until the next `inspectVariables`.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

__all__ = ("VariableExplorer", "is_user_variable")

_HIDDEN_NAMES = frozenset(
    {
        "__name__",
        "__doc__",
        "__package__",
        "__loader__",
        "__spec__",
        "__annotations__",
        "__builtins__",
        "__builtin__",
        "__display__",
        "get_ipython",
        "debugpy",
        "exit",
        "quit",
        "In",
        "Out",
        "_oh",
        "_dh",
        "_ih",
        "_",
        "__",
        "___",
    }
)
"""IPython's and the kernel's own names in the user namespace."""
_HISTORY_NAME = re.compile(r"_i{0,3}\d*$|_\d+$")
"""IPython's input and output history names (`_i`, `_ii`, `_i3`, `_7`)."""

_MAX_CHILDREN = 300
"""Children listed per container (the rest is elided: the panel is for looking, not dumping)."""
_MAX_VALUE = 1000
"""Characters of a value's repr shown."""


def is_user_variable(name: str) -> bool:
    """Whether `name` is one of the user's own variables (not IPython's or the kernel's)."""
    return name not in _HIDDEN_NAMES and not _HISTORY_NAME.fullmatch(name)


def _short_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception as e:  # a broken __repr__ must not break the panel
        text = f"<repr failed: {type(e).__name__}: {e}>"
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def _children(value: object) -> list[tuple[str, str, object]] | None:
    """The (name, evaluateName suffix, value) of `value`'s children, or None if it has none."""
    if isinstance(value, (str, bytes, bytearray, int, float, complex, bool)) or value is None:
        return None
    if isinstance(value, dict):
        return [(repr(k), f"[{k!r}]", v) for k, v in itertools.islice(value.items(), _MAX_CHILDREN)]
    if isinstance(value, (list, tuple)):
        return [(str(i), f"[{i}]", v) for i, v in enumerate(value[:_MAX_CHILDREN])]
    if isinstance(value, (set, frozenset)):
        return [(str(i), "", v) for i, v in enumerate(itertools.islice(value, _MAX_CHILDREN))]
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict) and attributes:
        return [
            (str(k), f".{k}", v)
            for k, v in itertools.islice(attributes.items(), _MAX_CHILDREN)
            if isinstance(k, str)
        ]
    return None


class VariableExplorer:
    """DAP variables of a namespace and of the containers in it."""

    def __init__(self) -> None:
        self._refs: dict[int, tuple[str, object]] = {}
        self._next = itertools.count(1)

    def knows(self, reference: int) -> bool:
        """Whether `reference` is one of this explorer's (else it is debugpy's)."""
        return reference in self._refs

    def inspect(self, namespace: dict[str, Any]) -> list[dict[str, Any]]:
        """Forget earlier references; return the user's variables of `namespace`."""
        self._refs.clear()
        return [
            self._variable(name, name, value)
            for name, value in list(namespace.items())
            if is_user_variable(name)
        ]

    def children(self, reference: int) -> list[dict[str, Any]]:
        """Return the children of the container behind `reference`.

        Raises:
            KeyError: The reference is not (or no longer) known.
        """
        path, value = self._refs[reference]
        return [
            self._variable(name, f"{path}{suffix}" if suffix else "", child)
            for name, suffix, child in _children(value) or ()
        ]

    def _variable(self, name: str, evaluate_name: str, value: object) -> dict[str, Any]:
        reference = 0
        if _children(value):
            reference = next(self._next)
            self._refs[reference] = (evaluate_name, value)
        variable: dict[str, Any] = {
            "name": name,
            "value": _short_repr(value),
            "type": type(value).__name__,
            "variablesReference": reference,
        }
        if evaluate_name:
            variable["evaluateName"] = evaluate_name
        return variable
