"""Completion, inspection, `is_complete` and history: the requests that read the shell."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.history import HistoryAccessor

if TYPE_CHECKING:
    from async_kernel.ipython._shell import AsyncInteractiveShell

__all__ = ("complete", "history", "inspect", "is_complete")


def _ok(**content: Any) -> dict[str, Any]:
    return {"status": "ok", **content}


def complete(shell: AsyncInteractiveShell, content: dict[str, Any]) -> dict[str, Any]:
    """Complete the code at the cursor."""
    from IPython.core.completer import provisionalcompleter, rectify_completions

    code = str(content.get("code", ""))
    cursor = content.get("cursor_pos")
    cursor = len(code) if cursor is None else int(cursor)
    with provisionalcompleter():
        raw = shell.Completer.completions(code, cursor)  # pyright: ignore[reportOptionalMemberAccess]
        completions = list(rectify_completions(code, raw))
    start = completions[0].start if completions else cursor
    end = completions[0].end if completions else cursor
    types = [
        {
            "start": c.start,
            "end": c.end,
            "text": c.text,
            "type": c.type,
            "signature": c.signature,
        }
        for c in completions
    ]
    return _ok(
        matches=[c.text for c in completions],
        cursor_start=start,
        cursor_end=end,
        metadata={"_jupyter_types_experimental": types},
    )


def inspect(shell: AsyncInteractiveShell, content: dict[str, Any]) -> dict[str, Any]:
    """Describe the object at the cursor (`obj?` / Shift+Tab)."""
    from IPython.utils.tokenutil import token_at_cursor

    code = str(content.get("code", ""))
    cursor = content.get("cursor_pos")
    name = token_at_cursor(code, len(code) if cursor is None else int(cursor))
    try:
        data = shell.object_inspect_mime(name, detail_level=int(content.get("detail_level", 0)))
    except KeyError:
        return _ok(found=False, data={}, metadata={})
    if not shell.enable_html_pager:
        data.pop("text/html", None)
    return _ok(found=True, data=data, metadata={})


def is_complete(shell: AsyncInteractiveShell, content: dict[str, Any]) -> dict[str, Any]:
    """Say whether the code is complete, incomplete (with the indent) or invalid."""
    code = str(content.get("code", ""))
    status, indent = shell.input_transformer_manager.check_complete(code)
    reply: dict[str, Any] = {"status": status}
    if status == "incomplete":
        reply["indent"] = " " * (indent or 0)
    return reply


def history(shell: AsyncInteractiveShell, content: dict[str, Any]) -> dict[str, Any]:
    """Return past input (and output): the tail, a range, or a search."""
    c = content
    history = shell.history_manager
    assert history is not None
    raw, output = bool(c.get("raw", True)), bool(c.get("output", False))
    match c.get("hist_access_type", "tail"):
        case "tail":
            items = history.get_tail(
                int(c.get("n") or 10), raw=raw, output=output, include_latest=True
            )
        case "range":
            session = int(c.get("session", 0))
            if session <= 0:  # 0 is the current session, -1 the one before, ...
                session += history.session_number
            # From the database, where each line is stored under its execution count:
            # `history.get_range` reads the current session from a list indexed by arrival,
            # which drifts from the counts once subshells or concurrent cells store input.
            history.writeout_cache()
            items = HistoryAccessor.get_range(
                history, session, int(c.get("start", 0)), c.get("stop"), raw=raw, output=output
            )
        case "search":
            items = history.search(
                str(c.get("pattern", "*")),
                raw=raw,
                output=output,
                n=c.get("n"),
                unique=bool(c.get("unique")),
            )
        case other:
            msg = f"unknown hist_access_type {other!r}: use 'tail', 'range' or 'search'"
            raise ValueError(msg)
    return _ok(history=[list(item) for item in items])
