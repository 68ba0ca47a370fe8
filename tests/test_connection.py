"""Connection files: reading, writing, ports chosen by the kernel, and the ipc transport."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty
from typing import TYPE_CHECKING, Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.connect import write_connection_file as jc_write_connection_file

from async_kernel._enums import Channel
from async_kernel.wire._connection import (
    ConnectionInfo,
    read_connection_file,
    write_connection_file,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

TIMEOUT = 30.0
PORT_KEYS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
CHANNEL_OF = {
    "shell_port": Channel.shell,
    "iopub_port": Channel.iopub,
    "stdin_port": Channel.stdin,
    "control_port": Channel.control,
    "hb_port": Channel.heartbeat,
}


# --- reading and writing ------------------------------------------------------------------------


def test_write_then_read(tmp_path: Path) -> None:
    ports = {Channel.shell: 5001, Channel.iopub: 5002, Channel.stdin: 5003}
    ports |= {Channel.control: 5004, Channel.heartbeat: 5005}
    info = ConnectionInfo(ip="127.0.0.2", key=b"secret-key", ports=ports, kernel_name="async-trio")
    path = tmp_path / "kernel.json"
    write_connection_file(path, info)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the key is a credential
    data = json.loads(path.read_text())
    assert data == {
        "shell_port": 5001,
        "iopub_port": 5002,
        "stdin_port": 5003,
        "control_port": 5004,
        "hb_port": 5005,
        "ip": "127.0.0.2",
        "transport": "tcp",
        "key": "secret-key",
        "signature_scheme": "hmac-sha256",
        "kernel_name": "async-trio",
    }
    assert read_connection_file(path) == info


def test_write_replaces_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "kernel.json"
    path.write_text("{}")
    path.chmod(0o644)
    write_connection_file(path, ConnectionInfo(key=b"k"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_connection_file(path).key == b"k"


def test_read_a_file_written_by_jupyter_client(tmp_path: Path) -> None:
    path = tmp_path / "jc.json"
    jc_write_connection_file(
        str(path),
        ip="127.0.0.1",
        key=b"jc-key",
        shell_port=6001,
        iopub_port=6002,
        stdin_port=6003,
        hb_port=6004,
        control_port=6005,
        kernel_name="async",
    )
    info = read_connection_file(path)
    assert info.key == b"jc-key"
    assert info.ip == "127.0.0.1"
    assert info.transport == "tcp"
    assert info.signature_scheme == "hmac-sha256"
    assert info.kernel_name == "async"
    assert info.ports == {
        Channel.shell: 6001,
        Channel.iopub: 6002,
        Channel.stdin: 6003,
        Channel.heartbeat: 6004,
        Channel.control: 6005,
    }


def test_read_defaults(tmp_path: Path) -> None:
    path = tmp_path / "minimal.json"
    path.write_text('{"shell_port": 7000}')
    info = read_connection_file(path)
    assert info.ip == "127.0.0.1"
    assert info.transport == "tcp"
    assert info.key == b""  # no key: messages are not signed
    assert info.signature_scheme == "hmac-sha256"
    assert info.ports[Channel.shell] == 7000
    assert all(info.ports[ch] == 0 for ch in CHANNEL_OF.values() if ch is not Channel.shell)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[]", "JSON object"),
        ('"a string"', "JSON object"),
        ('{"transport": "udp"}', "transport"),
    ],
)
def test_read_refuses(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_connection_file(path)


def test_read_refuses_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError):  # noqa: PT011 - orjson's decode error is a ValueError
        read_connection_file(path)


def test_urls() -> None:
    tcp = ConnectionInfo(ip="10.0.0.1", ports={Channel.shell: 1234})
    assert tcp.url(Channel.shell) == "tcp://10.0.0.1:1234"
    assert tcp.url(Channel.iopub) == "tcp://10.0.0.1:0"
    assert tcp.url(Channel.shell, 99) == "tcp://10.0.0.1:99"
    ipc = ConnectionInfo(ip="/tmp/kernel-x", transport="ipc", ports={Channel.control: 3})
    assert ipc.url(Channel.control) == "ipc:///tmp/kernel-x-3"


# --- a kernel started from a connection file ----------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # not there yet, or half written
        return None
    return data if isinstance(data, dict) else None


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: ipc socket paths are limited to about 100 bytes."""
    path = Path(tempfile.mkdtemp(prefix="ak-"))
    try:
        yield path
    finally:
        for child in path.iterdir():
            child.unlink()
        path.rmdir()


def _start(connection_file: Path, log: Path, *settings: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "async_kernel", "start", "-f", str(connection_file), *settings],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _talk_and_shut_down(connection_file: Path, process: subprocess.Popen[bytes]) -> None:
    """Connect a client, check kernel_info, then shut the kernel down from the client."""
    kc = BlockingKernelClient(connection_file=str(connection_file))
    kc.load_connection_file()
    kc.start_channels()
    try:
        # No `wait_for_ready`: with no manager, it takes a kernel that does not beat yet for
        # dead. The request waits in the socket until the kernel has bound its port.
        msg_id = kc.kernel_info()
        reply = _reply(kc.get_shell_msg, msg_id)
        assert reply["content"]["status"] == "ok"
        assert reply["content"]["implementation"] == "async_kernel"
        msg_id = kc.shutdown()
        assert _reply(kc.get_control_msg, msg_id)["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
    assert process.wait(timeout=TIMEOUT) == 0


def _reply(get: Any, msg_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no reply to {msg_id}")
        try:
            msg = get(timeout=remaining)
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(TIMEOUT)


@pytest.mark.parametrize(
    ("transport", "backend"),
    [("tcp", "asyncio"), ("tcp", "trio"), ("ipc", "asyncio")],
)
def test_ports_0_are_chosen_and_written_back(short_dir: Path, transport: str, backend: str) -> None:
    connection_file = short_dir / "kernel.json"
    ip = "127.0.0.1" if transport == "tcp" else str(short_dir / "k")
    original = dict.fromkeys(PORT_KEYS, 0) | {
        "ip": ip,
        "transport": transport,
        "key": "a-key-for-the-test",
        "signature_scheme": "hmac-sha256",
        "kernel_name": "",
    }
    connection_file.write_text(json.dumps(original))
    process = _start(connection_file, short_dir / "stderr.log", f"--Kernel.backend={backend}")
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            data = _read_json(connection_file)
            if data is not None and all(data.get(key) for key in PORT_KEYS):
                break
            assert process.poll() is None, (short_dir / "stderr.log").read_text()
            assert time.monotonic() < deadline, f"no ports written back: {data}"
            time.sleep(0.05)  # polling a file with a deadline, not ordering events
        ports = [data[key] for key in PORT_KEYS]
        assert len(set(ports)) == len(ports)
        assert all(isinstance(p, int) and p > 0 for p in ports)
        # Everything else is kept as it was.
        assert {k: v for k, v in data.items() if k not in PORT_KEYS} == {
            k: v for k, v in original.items() if k not in PORT_KEYS
        }
        if transport == "ipc":
            for port in ports:
                assert Path(f"{ip}-{port}").exists()
        _talk_and_shut_down(connection_file, process)
    finally:
        _stop(process)


def test_given_ports_are_used_and_the_file_is_left_alone(short_dir: Path) -> None:
    """With every port given (as jupyter_client does), the kernel binds them and writes nothing."""
    connection_file = short_dir / "kernel.json"
    jc_write_connection_file(str(connection_file), ip="127.0.0.1", key=b"given-ports-key")
    before = connection_file.read_bytes()
    process = _start(connection_file, short_dir / "stderr.log")
    try:
        _talk_and_shut_down(connection_file, process)
    finally:
        _stop(process)
    assert connection_file.read_bytes() == before


@pytest.mark.parametrize("kernel_name", ["async", "async-trio"])
def test_ipc_kernel_through_jupyter_client(short_dir: Path, kernel_name: str) -> None:
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=kernel_name, transport="ipc", ip=str(short_dir / "ipc"))
    km.connection_file = str(short_dir / "kernel.json")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=TIMEOUT)
        msg_id = kc.kernel_info()
        assert _reply(kc.get_shell_msg, msg_id)["content"]["status"] == "ok"
        msg_id = kc.execute("6 * 7")
        assert _reply(kc.get_shell_msg, msg_id)["content"]["status"] == "ok"
        info = km.get_connection_info()
        assert info["transport"] == "ipc"
        assert os.path.exists(f"{info['ip']}-{info['shell_port']}")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
