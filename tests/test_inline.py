"""Which cell an inline figure belongs to, and the swap of matplotlib-inline's show and flush."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

import pytest

from async_kernel._enums import Channel
from async_kernel.ipython._inline import CellFigures
from async_kernel.wire._job import Job, current_job
from async_kernel.wire._session import Message

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ()


def job() -> Job:
    header = {"msg_type": "execute_request", "msg_id": "m"}
    return Job(Message(header=header, parent_header={}, metadata={}, content={}), Channel.shell)


def in_cell(cell: Job | None, fn: Callable[[], Any]) -> Any:
    """Call `fn` in a fresh context whose request is `cell`."""

    def run() -> Any:
        current_job.set(cell)
        return fn()

    return contextvars.Context().run(run)


@pytest.fixture
def figures() -> CellFigures:
    shell: Any = None  # only used to show errors of displays, which these tests never make
    return CellFigures(shell)


def test_a_figure_belongs_to_the_running_cell_that_made_it(figures: CellFigures) -> None:
    a, b = job(), job()
    in_cell(a, figures.cell_started)
    in_cell(b, figures.cell_started)
    show: Any = figures.show_function
    in_cell(a, lambda: show._to_draw.append("fig a"))
    in_cell(b, lambda: show._to_draw.append("fig b"))
    in_cell(a, lambda: setattr(show, "_draw_called", True))
    assert in_cell(a, lambda: (show._to_draw, show._draw_called)) == (["fig a"], True)
    assert in_cell(b, lambda: (show._to_draw, show._draw_called)) == (["fig b"], False)
    assert in_cell(a, figures.owner) is a


def test_figures_of_no_running_cell_belong_to_none(figures: CellFigures) -> None:
    ended = job()
    show: Any = figures.show_function
    in_cell(ended, lambda: show._to_draw.append("before it started"))
    assert figures.drawn(None).figures == ["before it started"]
    assert in_cell(ended, figures.owner) is None


def test_an_ended_cell_leaves_its_unshown_figures_to_no_cell(figures: CellFigures) -> None:
    cell = job()
    show: Any = figures.show_function
    in_cell(cell, figures.cell_started)
    in_cell(cell, lambda: (show._to_draw.append("left"), setattr(show, "_draw_called", True)))
    in_cell(cell, figures.cell_ended)
    assert in_cell(cell, figures.owner) is None
    assert (figures.drawn(None).figures, figures.drawn(None).called) == (["left"], True)


def test_a_nested_run_cell_does_not_end_its_cell(figures: CellFigures) -> None:
    cell = job()
    in_cell(cell, lambda: (figures.cell_started(), figures.cell_started(), figures.cell_ended()))
    assert in_cell(cell, figures.owner) is cell
    in_cell(cell, figures.cell_ended)
    assert in_cell(cell, figures.owner) is None


def test_adopt_replaces_matplotlib_inline_and_restore_gives_it_back(
    figures: CellFigures,
) -> None:
    backend = pytest.importorskip("matplotlib_inline.backend_inline")
    show, flush = backend.show, backend.flush_figures
    try:
        assert figures.adopt(print) is print
        assert figures.adopt(flush) is figures.flush_function
        assert backend.show is figures.show_function
        assert backend.flush_figures is figures.flush_function
        assert figures.adopt(figures.flush_function) is figures.flush_function
    finally:
        figures.restore()
    assert (backend.show, backend.flush_figures) == (show, flush)
