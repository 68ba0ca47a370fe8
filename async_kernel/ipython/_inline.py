"""IPython's events for a concurrent kernel, and inline figures that go to the cell that drew them.

matplotlib-inline shows a cell's new figures at the end of the cell, from a `post_execute`
callback, using process-wide state: one list of figures to draw and one "drawn" flag. With
cells running at once (tasks, `##thread` cells, subshells) the first cell to end would take
every other cell's figures. When matplotlib-inline is loaded, its `show` and `flush_figures`
are replaced by cell-aware ones with the same behaviour for a single cell:

- A figure belongs to the cell that created it: the running cell whose output the creating code
  produces (the cell itself, or its tasks, `Caller` calls and threads — see the output parent
  rules). Figures created while no cell runs (a comm handler, a thread whose cell has ended)
  belong to no cell.
- At the end of a cell, its figures and those of no cell are shown in it; with
  `InlineBackend.close_figures` (the default) every open figure that no *other running* cell
  owns is shown and closed, as matplotlib-inline does.
- `plt.show()` shows (and closes) the open figures that no other running cell owns.

Only figures created while matplotlib is interactive (the inline default) are tracked, as in
matplotlib-inline. pyplot's *current* figure is one for the whole process: cells that plot at
the same time should use their own figures (`fig, ax = plt.subplots()`).
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

from IPython.core.events import EventManager

from async_kernel.output._comm import at_safe_point
from async_kernel.output._routing import current_parent
from async_kernel.wire._job import current_job

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from IPython.core.interactiveshell import InteractiveShell

    from async_kernel.wire._job import Job

__all__ = ("CellFigures", "KernelEventManager")

_INLINE_MODULE = "matplotlib_inline.backend_inline"
_CELL_EVENTS = frozenset({"pre_execute", "post_execute"})


class _Drawn:
    """The figures one cell (or no cell) created since they were last shown."""

    __slots__ = ("called", "figures")

    def __init__(self) -> None:
        self.figures: list[Any] = []
        self.called = False


class _InlineShow:
    """Takes the place of matplotlib-inline's `show`, with its state kept per cell.

    matplotlib-inline's figure manager appends each new figure to `show._to_draw` and sets
    `show._draw_called`; here both are those of the cell the figure belongs to.
    """

    def __init__(self, figures: CellFigures) -> None:
        self._cells = figures

    def __call__(self, close: bool | None = None, block: bool | None = None) -> None:
        """Show the open figures no other running cell owns (`plt.show()`)."""
        self._cells.show(close)

    @property
    def _to_draw(self) -> list[Any]:
        return self._cells.drawn(self._cells.owner()).figures

    @_to_draw.setter
    def _to_draw(self, figures: list[Any]) -> None:
        self._cells.drawn(self._cells.owner()).figures = list(figures)

    @property
    def _draw_called(self) -> bool:
        return self._cells.drawn(self._cells.owner()).called

    @_draw_called.setter
    def _draw_called(self, called: bool) -> None:
        self._cells.drawn(self._cells.owner()).called = called


class CellFigures:
    """Which running cell each inline figure belongs to, and the cell-aware show and flush.

    Args:
        shell: The shell whose errors are shown when a figure cannot be displayed.
    """

    def __init__(self, shell: InteractiveShell) -> None:
        self._shell = shell
        self._lock = threading.Lock()
        self._running: dict[Job, int] = {}
        self._drawn: dict[Job | None, _Drawn] = {}
        self._originals: dict[str, Any] = {}
        self.show_function = _InlineShow(self)
        """What matplotlib-inline's `show` is replaced with."""
        self.flush_function: Callable[[], None] = self.flush
        """What matplotlib-inline's `flush_figures` (its `post_execute` callback) becomes."""

    # --- which cells run -------------------------------------------------------------------

    def cell_started(self) -> None:
        """The cell of the current context starts (`pre_execute`)."""
        job = current_job.get()
        if job is not None:
            with self._lock:
                self._running[job] = self._running.get(job, 0) + 1

    def cell_ended(self) -> None:
        """The cell of the current context ended (after `post_execute`): it owns no more figures.

        Figures it left unshown (matplotlib-inline not flushing) then belong to no cell.
        """
        job = current_job.get()
        if job is None:
            return
        with self._lock:
            depth = self._running.pop(job, 0) - 1
            if depth > 0:
                self._running[job] = depth
                return
            left = self._drawn.pop(job, None)
            if left is not None and (left.figures or left.called):
                orphans = self._drawn.setdefault(None, _Drawn())
                orphans.figures.extend(left.figures)
                orphans.called = orphans.called or left.called

    def owner(self) -> Job | None:
        """The running cell that a figure created here belongs to, or None."""
        job = current_parent()
        if job is None:
            return None
        with self._lock:
            return job if job in self._running else None

    def drawn(self, owner: Job | None) -> _Drawn:
        """The figures `owner` created since they were last shown."""
        with self._lock:
            drawn = self._drawn.get(owner)
            if drawn is None:
                drawn = self._drawn[owner] = _Drawn()
            return drawn

    # --- matplotlib-inline -----------------------------------------------------------------

    def adopt(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """Return the callback to register for `function`: ours for matplotlib-inline's flush.

        The first time matplotlib-inline registers its flush (it does so when it is imported
        and on `%matplotlib inline`), its `show` and `flush_figures` are replaced, before
        pyplot takes the backend's functions.
        """
        module = sys.modules.get(_INLINE_MODULE)
        if module is None or self._originals:
            return function
        original = getattr(module, "flush_figures", None)
        if function is not original:
            return function
        with self._lock:
            for name, value in (
                ("show", self.show_function),
                ("flush_figures", self.flush_function),
            ):
                self._originals[name] = getattr(module, name)
                setattr(module, name, value)
        return self.flush_function

    def restore(self) -> None:
        """Give matplotlib-inline its own `show` and `flush_figures` back."""
        module = sys.modules.get(_INLINE_MODULE)
        with self._lock:
            originals, self._originals = self._originals, {}
        if module is not None:
            for name, value in originals.items():
                setattr(module, name, value)

    def flush(self) -> None:
        """Show what the current cell drew, at its end; close figures if configured to."""
        owner = self.owner()
        with self._lock:
            mine = [d for d in (self._drawn.pop(owner, None), self._drawn.pop(None, None)) if d]
        if not any(d.called for d in mine):
            return
        if _close_figures():
            self.show(True)
            return
        shown = {id(f) for f in _open_figures()}
        self._display(f for d in mine for f in d.figures if id(f) in shown)

    def show(self, close: bool | None = None) -> None:
        """Show the open figures that no other running cell owns; close them if `close`."""
        if close is None:
            close = _close_figures()
        owner = self.owner()
        with self._lock:
            theirs = {
                id(f)
                for job, drawn in self._drawn.items()
                if job is not None and job != owner and job in self._running
                for f in drawn.figures
            }
            for key in (owner, None):
                if (drawn := self._drawn.get(key)) is not None:
                    drawn.figures = []
        figures = [f for f in _open_figures() if id(f) not in theirs]
        try:
            self._display(figures)
        finally:
            if close and figures:
                import matplotlib.pyplot as plt

                for figure in figures:
                    plt.close(figure)

    def _display(self, figures: Iterable[Any]) -> None:
        from IPython.display import display

        module = sys.modules.get(_INLINE_MODULE)
        metadata: Callable[[Any], Any] = getattr(module, "_fetch_figure_metadata", _no_metadata)
        for figure in figures:
            try:
                display(figure, metadata=metadata(figure))
            except Exception:
                # As matplotlib-inline does: the error is shown in the cell, not raised.
                self._shell.showtraceback()
                return


class KernelEventManager(EventManager):
    """IPython's events, which also keep track of the running cells for inline figures."""

    def __init__(self, shell: InteractiveShell, available_events: Iterable[str]) -> None:
        super().__init__(shell, available_events)
        self.figures = CellFigures(shell)
        """Which cell each inline figure belongs to."""

    def register(self, event: str, function: Callable[..., Any]) -> None:
        """Register a callback (matplotlib-inline's flush becomes the cell-aware one)."""
        super().register(event, self.figures.adopt(function))

    def unregister(self, event: str, function: Callable[..., Any]) -> None:
        """Remove a callback."""
        super().unregister(event, self.figures.adopt(function))

    def trigger(self, event: str, *args: Any, **kwargs: Any) -> None:
        """Call the callbacks of `event` (errors are shown, as IPython does).

        A comm handler that runs inside a cell's `time.sleep` triggers no `pre_execute` or
        `post_execute`: those would flush the cell's pending displays (a new ipympl figure)
        under the comm message; the cell's own end triggers them.
        """
        if event in _CELL_EVENTS and at_safe_point():
            return
        if event == "pre_execute":
            self.figures.cell_started()
        try:
            super().trigger(event, *args, **kwargs)
        finally:
            if event == "post_execute":
                self.figures.cell_ended()


def _no_metadata(figure: Any) -> None:
    return None


def _close_figures() -> bool:
    from matplotlib_inline.config import InlineBackend

    return bool(InlineBackend.instance().close_figures)


def _open_figures() -> list[Any]:
    from matplotlib._pylab_helpers import Gcf

    return [manager.canvas.figure for manager in Gcf.get_all_fig_managers()]
