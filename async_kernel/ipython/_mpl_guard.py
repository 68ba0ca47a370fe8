"""Keeping matplotlib's GUI windows on the main thread when cells run on other threads.

A Qt or Tk figure window belongs to the main thread: made on another thread (a `##thread`
cell, a subshell), Qt breaks or aborts and Tk fails later in the garbage collector. Once a GUI
event loop is enabled, `guard_pyplot` wraps a few `matplotlib.pyplot` functions so that, off
the main thread and with a GUI backend:

* a new figure window (`figure`, `subplots`, `plot` with no figure yet, `pause`, a blocking
  `show`) raises a `RuntimeError` that names the main-thread requirement;
* redraws (`draw`, the `draw_all` matplotlib runs after each cell, `show`) are handed to
  the main thread, so a thread may add to a figure made on the main thread and see it drawn.

The wrappers stay once installed: they cost nothing per tick, and the figures they protect
outlive a `%gui` that is turned off.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from async_kernel.callers._caller import Caller

__all__ = ("MainThreadRequired", "guard_pyplot")

_MARK = "_async_kernel_main_thread_guard"


class MainThreadRequired(RuntimeError):
    """A GUI figure window was asked for off the main thread."""


def _gui_framework(pyplot: ModuleType) -> str | None:
    """The GUI toolkit the current backend draws with (None for inline, agg, files)."""
    try:
        from matplotlib.backends.registry import backend_registry
    except ImportError:  # matplotlib < 3.9: no registry, no guard
        return None
    try:
        _, framework = backend_registry.resolve_backend(pyplot.get_backend())
    except Exception:  # an unknown module:// backend: not ours to judge
        return None
    return None if framework in (None, "headless") else framework


def _refusal(pyplot: ModuleType, what: str) -> MainThreadRequired:
    thread = threading.current_thread().name
    return MainThreadRequired(
        f"{what} needs the main thread: matplotlib's {pyplot.get_backend()} backend draws in "
        f"GUI windows, which live on the main thread, and this code runs on thread {thread!r} "
        "(a `##thread` cell, a subshell or a thread of its own). Make the figure in a "
        "main-shell cell (this thread may then plot into it), or use `%matplotlib inline`."
    )


def _off_main_gui(pyplot: ModuleType) -> bool:
    return (
        threading.current_thread() is not threading.main_thread()
        and _gui_framework(pyplot) is not None
    )


def guard_pyplot(main: Caller) -> None:
    """Install the wrappers on `matplotlib.pyplot` if it is imported and they are not yet."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None or getattr(pyplot.new_figure_manager, _MARK, False):
        return

    def refuse_off_main(name: str, what: str) -> None:
        original: Callable[..., Any] = getattr(pyplot, name)

        @functools.wraps(original)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if _off_main_gui(pyplot):
                raise _refusal(pyplot, what)
            return original(*args, **kwargs)

        setattr(guarded, _MARK, True)
        setattr(pyplot, name, guarded)

    def forward_off_main(name: str, what: str) -> None:
        original: Callable[..., Any] = getattr(pyplot, name)

        @functools.wraps(original)
        def forwarded(*args: Any, **kwargs: Any) -> Any:
            if not _off_main_gui(pyplot):
                return original(*args, **kwargs)
            if kwargs.get("block"):
                raise _refusal(pyplot, what)
            if name == "draw":  # the current figure of this thread, not the main thread's
                main.call_soon(pyplot.gcf().canvas.draw_idle)
            else:
                main.call_soon(original, *args, **kwargs)
            return None

        setattr(pyplot, name, forwarded)

    refuse_off_main("new_figure_manager", "A new figure window")
    refuse_off_main("pause", "plt.pause (it runs the GUI event loop)")
    forward_off_main("show", "A blocking plt.show")
    forward_off_main("draw", "plt.draw")
    forward_off_main("draw_all", "plt.draw_all")
