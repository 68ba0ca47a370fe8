"""Every Python block of the docs runs: the docs cannot drift from the code.

Each ```` ```python ```` block of `docs/*.md` and `README.md` is checked in one of three ways,
chosen by an HTML comment on the line just above it (invisible on the site):

* no comment: the block is a notebook cell. The blocks of one page run in order as cells of
  one fresh kernel and must all succeed;
* `<!-- check: client -->`: the block is client code (jupyter_client). It runs in a Python
  process of its own, against the kernelspecs the tests install, and must exit 0;
* `<!-- check: skip <reason> -->`: not run here; the reason names what runs it instead.

A `<!-- check: setup <code> -->` comment runs `<code>` in the page's kernel before the block,
and `<!-- check: sed <old> => <new> -->` runs the block with `<old>` replaced (a long
`time.sleep` made short), so the block shown stays the one users read.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kernel_driver import TIMEOUT, Driver

ROOT = Path(__file__).parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
_BLOCK = re.compile(
    r"(?P<checks>(?:^<!-- check: .*? -->\n)*)^```python\n(?P<code>.*?)^```", re.M | re.S
)
_CHECK = re.compile(r"<!-- check: (?P<kind>\w+) ?(?P<arg>.*?) -->")


@dataclass
class Block:
    """One Python block of a page and how to check it."""

    page: Path
    line: int
    code: str
    kind: str = "cell"
    setup: list[str] = field(default_factory=list)
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The Python blocks of `page`, with their checks applied."""
    text = page.read_text()
    found = []
    for match in _BLOCK.finditer(text):
        block = Block(page, text.count("\n", 0, match.start("code")), match["code"])
        for check in _CHECK.finditer(match["checks"]):
            kind, arg = check["kind"], check["arg"]
            if kind in ("client", "skip"):
                block.kind, block.reason = kind, arg
            elif kind == "setup":
                block.setup.append(arg)
            elif kind == "sed":
                old, new = arg.split(" => ")
                assert old in block.code, f"{block}: {old!r} is not in the block"
                block.code = block.code.replace(old, new)
            else:
                pytest.fail(f"{block}: unknown check {kind!r}")
        found.append(block)
    return found


ALL = [block for page in PAGES for block in blocks(page)]


def test_the_docs_have_python_blocks_and_skips_say_why() -> None:
    assert len(ALL) >= 10
    assert all(b.reason for b in ALL if b.kind == "skip"), "a skip must name its reason"


@pytest.mark.parametrize(
    "page", [p for p in PAGES if any(b.kind == "cell" for b in blocks(p))], ids=lambda p: p.name
)
def test_cells_of_the_page_run(page: Path) -> None:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="async", startup_timeout=60)
    try:
        driver = Driver(kc)
        for block in (b for b in blocks(page) if b.kind == "cell"):
            for setup in block.setup:
                driver.run(setup)
            msg_id = driver.execute(block.code)
            reply = driver.reply(msg_id, TIMEOUT * 2)["content"]
            assert reply["status"] == "ok", (str(block), reply, driver.errors(msg_id))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.mark.parametrize("block", [b for b in ALL if b.kind == "client"], ids=str)
def test_client_blocks_run(block: Block) -> None:
    code = (
        block.code
        + "\n"
        + textwrap.dedent(
            """
        if "km" in globals():  # a block that started a kernel with a manager
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        """
        )
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, (str(block), done.stderr[-2000:])
