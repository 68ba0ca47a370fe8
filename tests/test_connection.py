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
    ConnectionFileError,
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
    assert info.signature_scheme == "hmac-sha256"
    assert info.ports[Channel.shell] == 7000
    assert all(info.ports[ch] == 0 for ch in CHANNEL_OF.values() if ch is not Channel.shell)


@pytest.mark.parametrize("text", ['{"shell_port": 7000}', '{"key": null}'])
def test_a_file_without_key_fails_closed(tmp_path: Path, text: str) -> None:
    """No key is not "no signing": the kernel signs with a random key nobody knows."""
    path = tmp_path / "nokey.json"
    path.write_text(text)
    first, second = read_connection_file(path), read_connection_file(path)
    assert first.key_generated
    assert len(first.key) == 64
    assert first.key != second.key


def test_an_empty_key_disables_signing(tmp_path: Path) -> None:
    path = tmp_path / "unsigned.json"
    path.write_text('{"key": ""}')
    info = read_connection_file(path)
    assert info.key == b""
    assert not info.key_generated


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[]", "JSON object"),
        ('"a string"', "JSON object"),
        ("{not json", "not JSON"),
        ('{"transport": "udp"}', "transport"),
        ('{"signature_scheme": "hmac-nope"}', "unsupported signature scheme 'hmac-nope'"),
        ('{"signature_scheme": "sha256"}', "unsupported signature scheme"),
        ('{"signature_scheme": 256}', "signature scheme must be a string"),
        ('{"key": 12}', "key must be a string"),
        ('{"shell_port": "5000"}', "shell_port must be a port number"),
        ('{"hb_port": 70000}', "hb_port must be a port number"),
    ],
)
def test_read_refuses(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConnectionFileError, match=match) as caught:
        read_connection_file(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_read_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConnectionFileError, match="cannot read the connection file"):
        read_connection_file(tmp_path / "absent.json")


@pytest.mark.parametrize("scheme", ["hmac-md5", "hmac-sha1", "hmac-sha512", "hmac-sha3_256"])
def test_read_accepts_every_hashlib_scheme(tmp_path: Path, scheme: str) -> None:
    path = tmp_path / "kernel.json"
    path.write_text(json.dumps({"key": "k", "signature_scheme": scheme}))
    assert read_connection_file(path).signature_scheme == scheme


def test_written_file_is_private_from_the_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a umask of 0, every byte still goes into a file that only the owner can read."""
    modes: list[int] = []
    real_write = os.write

    def spy(fd: int, data: Any) -> int:
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    path = tmp_path / "kernel.json"
    path.write_text("{}")
    path.chmod(0o644)  # a readable file already there is replaced, not reused
    old_umask = os.umask(0)
    try:
        monkeypatch.setattr(os, "write", spy)
        write_connection_file(path, ConnectionInfo(key=b"a-secret"))
    finally:
        monkeypatch.undo()
        os.umask(old_umask)
    assert modes, "the file was not written with os.write"
    assert set(modes) == {0o600}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_connection_file(path).key == b"a-secret"
    assert [p.name for p in tmp_path.iterdir()] == ["kernel.json"]  # no temporary file left


def test_a_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(src: Any, dst: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk on fire"):
        write_connection_file(tmp_path / "kernel.json", ConnectionInfo())
    assert list(tmp_path.iterdir()) == []


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


def _start(
    connection_file: Path, log: Path, *settings: str, umask: int = -1
) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "async_kernel", "start", "-f", str(connection_file), *settings],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            umask=umask,
        )


def _wait_for_log(log: Path, text: str, process: subprocess.Popen[bytes]) -> str:
    """Wait until the kernel's stderr contains `text`; return all of it."""
    deadline = time.monotonic() + TIMEOUT
    while text not in (content := log.read_text(errors="replace")):
        assert process.poll() is None, f"the kernel exited: {content}"
        assert time.monotonic() < deadline, f"{text!r} never appeared in the log: {content}"
        time.sleep(0.05)  # polling a file with a deadline, not ordering events
    return content


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


def _reply(get: Any, msg_id: str, msg_type: str | None = None) -> dict[str, Any]:
    """The first message of `get` (of `msg_type`, if given) whose parent is `msg_id`."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no reply to {msg_id}")
        try:
            msg = get(timeout=remaining)
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id and msg_type in (None, msg["msg_type"]):
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
    # With a umask of 0, a file created without an explicit mode would be world-readable.
    process = _start(
        connection_file, short_dir / "stderr.log", f"--Kernel.backend={backend}", umask=0
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            data = _read_json(connection_file)
            if data is not None and all(data.get(key) for key in PORT_KEYS):
                break
            assert process.poll() is None, (short_dir / "stderr.log").read_text()
            assert time.monotonic() < deadline, f"no ports written back: {data}"
            time.sleep(0.05)  # polling a file with a deadline, not ordering events
        assert stat.S_IMODE(connection_file.stat().st_mode) == 0o600
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


@pytest.mark.parametrize("scheme", ["hmac-md5", "hmac-sha512"])
def test_kernel_signs_with_the_connection_files_scheme(scheme: str) -> None:
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="async")
    km.session.signature_scheme = scheme  # written to the connection file, used by the client
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=TIMEOUT)
        assert km.get_connection_info()["signature_scheme"] == scheme
        assert kc.session.signature_scheme == scheme
        msg_id = kc.execute("print(6 * 7)")
        assert _reply(kc.get_shell_msg, msg_id)["content"]["status"] == "ok"
        stdout = _reply(kc.get_iopub_msg, msg_id, msg_type="stream")
        assert stdout["content"]["text"] == "42\n"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def test_an_unknown_scheme_refuses_to_start(short_dir: Path) -> None:
    connection_file = short_dir / "kernel.json"
    jc_write_connection_file(str(connection_file), ip="127.0.0.1", key=b"k")
    data = json.loads(connection_file.read_text())
    connection_file.write_text(json.dumps(data | {"signature_scheme": "hmac-nope"}))
    process = _start(connection_file, short_dir / "stderr.log")
    try:
        assert process.wait(timeout=TIMEOUT) == 1
    finally:
        _stop(process)
    err = (short_dir / "stderr.log").read_text()
    assert "async-kernel: error: cannot start the kernel" in err
    assert "unsupported signature scheme 'hmac-nope'" in err
    assert "Traceback" not in err


def test_a_kernel_without_key_answers_nobody(short_dir: Path) -> None:
    """A connection file without `key` fails closed: unsigned requests are dropped."""
    connection_file = short_dir / "kernel.json"
    jc_write_connection_file(str(connection_file), ip="127.0.0.1", key=b"unused")
    data = json.loads(connection_file.read_text())
    del data["key"]
    connection_file.write_text(json.dumps(data))
    log = short_dir / "stderr.log"
    process = _start(connection_file, log)
    kc = BlockingKernelClient(connection_file=str(connection_file))
    kc.load_connection_file()
    kc.session.key = b""  # what a client that took the missing key for "unsigned" would do
    kc.start_channels()
    try:
        _wait_for_log(log, "has no key: messages are signed with a random key", process)
        kc.kernel_info()
        _wait_for_log(log, "unsigned message", process)
        with pytest.raises(Empty):  # dropped: there is no reply to wait for
            kc.get_shell_msg(timeout=0.5)
        assert json.loads(connection_file.read_text()) == data  # the file is left alone
    finally:
        kc.stop_channels()
        _stop(process)


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
