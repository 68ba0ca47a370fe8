"""Tests for `async_kernel.ipython._magics`: `%callers` in a plain IPython shell."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import async_kernel.ipython._magics
from async_kernel.callers._caller import Caller
from async_kernel.ipython._magics import CallersTable, KernelMagics

if TYPE_CHECKING:
    from collections.abc import Iterator

TIMEOUT = 10


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    config = Config()
    config.HistoryManager.hist_file = ":memory:"  # leave the user's history alone
    shell = InteractiveShell.instance(config=config)
    shell.register_magics(KernelMagics)
    return shell


@pytest.fixture
def callers() -> Iterator[tuple[Caller, Caller]]:
    plain = Caller.start_new(name="magic-plain", backend="asyncio")
    guarded = Caller.start_new(name="magic-guarded", backend="trio", protected=True)
    yield plain, guarded
    plain.stop()
    guarded.stop(force=True)
    for caller in (plain, guarded):
        assert caller.thread is not None
        caller.thread.join(TIMEOUT)


def test_all_is_declared() -> None:
    assert set(async_kernel.ipython._magics.__all__) == {
        "CallersTable",
        "KernelMagics",
        "SubshellInfo",
    }


def test_callers_renders_text_and_html(
    shell: InteractiveShell, callers: tuple[Caller, Caller]
) -> None:
    result = shell.run_line_magic("callers", "")
    assert isinstance(result, CallersTable)
    data, _ = shell.display_formatter.format(result)
    text, html = data["text/plain"], data["text/html"]
    for caller in callers:
        assert caller.name in text
        assert caller.name in html
    body = [line for line in text.splitlines() if line.startswith("│")]
    rows = {line.split("│")[2].strip(): line for line in body}
    assert "trio" in rows["magic-guarded"]
    assert "asyncio" in rows["magic-plain"]
    assert rows["magic-guarded"].count("yes") == 2, "running and protected"
    assert rows["magic-plain"].count("yes") == 1, "running, not protected"
    assert not any("▶" in line for line in body), "the test thread runs no caller"
    assert html.startswith("<pre")
    assert "<span" in html
    assert repr(result).strip() == text.strip()


def test_callers_marks_the_current_thread(
    shell: InteractiveShell, callers: tuple[Caller, Caller]
) -> None:
    plain, _ = callers
    text = plain.call_soon(lambda: repr(shell.run_line_magic("callers", ""))).result(TIMEOUT)
    marked = [line for line in text.splitlines() if line.startswith("│") and "▶" in line]
    assert len(marked) == 1
    assert "magic-plain" in marked[0]


def test_stopped_callers_disappear(shell: InteractiveShell) -> None:
    caller = Caller.start_new(name="magic-gone")
    caller.stop()
    assert caller.thread is not None
    caller.thread.join(TIMEOUT)
    assert "magic-gone" not in repr(shell.run_line_magic("callers", ""))


def test_subshell_info_lists_and_marks_the_current_subshell() -> None:
    from async_kernel.ipython._magics import SubshellInfo

    text = repr(SubshellInfo("b", ["a", "b"]))
    assert "current: b" in text
    assert "subshells: 2" in text
    assert "▶ b" in text
    assert "▶ a" not in text
    assert "current: main shell" in repr(SubshellInfo(None, []))
