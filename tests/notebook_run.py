"""Run a notebook headless on a kernel and check what its cells print."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import nbformat
from nbclient import NotebookClient

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = ("cell_text", "run_notebook")


def cell_text(cell: Any) -> str:
    """The stream text and `text/plain` data of a code cell's outputs."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)


def run_notebook(
    path: Path,
    kernel_name: str,
    expect: Mapping[str, tuple[str, ...]],
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Execute `path` on `kernel_name`; check `expect` (cell id → texts it prints); return cells.

    Every code cell must finish without an error output. `env` replaces the kernel's
    environment (by default it is this process's).
    """
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name=kernel_name, timeout=60).execute(
        env=dict(os.environ) if env is None else env
    )
    cells = {cell.get("id"): cell for cell in nb.cells}
    for cell_id, texts in expect.items():
        assert cell_id in cells, f"{path.name} has no cell {cell_id!r}"
        output = cell_text(cells[cell_id])
        for text in texts:
            assert text in output, f"{path.name} cell {cell_id!r}: {text!r} not in {output!r}"
    for cell in nb.cells:
        if cell.cell_type == "code":
            errors = [o for o in cell.outputs if o["output_type"] == "error"]
            assert not errors, f"{path.name} cell {cell.get('id')!r} failed: {errors}"
    return cells
