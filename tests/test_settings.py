"""Kernel settings given on the command line take effect in a real kernel process."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jupyter_client.blocking.client import BlockingKernelClient


@pytest.fixture(scope="module")
def configured() -> Iterator[BlockingKernelClient]:
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="async")
    km.start_kernel(
        extra_arguments=[
            "--Kernel.capture_fd_output=False",
            "--Kernel.concurrency_mode=blocking",
            "--Kernel.flush_interval=0.05",
        ]
    )
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def run(kc: BlockingKernelClient, code: str) -> tuple[dict[str, object], str]:
    """Execute `code`; return the reply content and all stdout text."""
    out: list[str] = []

    def hook(msg: dict[str, object]) -> None:
        content = msg["content"]
        assert isinstance(content, dict)
        if msg["msg_type"] == "stream" and content.get("name") == "stdout":
            out.append(str(content["text"]))

    reply = kc.execute_interactive(code, timeout=30, output_hook=hook)
    return reply["content"], "".join(out)


def test_settings_reach_the_kernel(configured: BlockingKernelClient) -> None:
    content, out = run(
        configured,
        "from async_kernel import get_kernel\n"
        "k = get_kernel()\n"
        "print(k.concurrency_mode.value, k.capture_fd_output, k.flush_interval)",
    )
    assert content["status"] == "ok"
    assert out == "blocking False 0.05\n"


def test_without_fd_capture_only_python_level_output_arrives(
    configured: BlockingKernelClient,
) -> None:
    content, out = run(configured, "import os\nos.write(1, b'fd-level\\n')\nprint('python-level')")
    assert content["status"] == "ok"
    assert out == "python-level\n"


def test_blocking_concurrency_runs_thread_cells_on_the_main_thread(
    configured: BlockingKernelClient,
) -> None:
    content, out = run(
        configured, "##thread\nimport threading\nprint(threading.current_thread().name)"
    )
    assert content["status"] == "ok"
    assert out == "MainThread\n"
