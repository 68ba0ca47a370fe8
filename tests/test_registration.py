"""The JEP 66 handshake (protocol 5.6): a kernel that binds its own ports and registers them.

The test is the launcher: it binds a registration ROUTER, writes a registration file, starts
`async-kernel start`, checks the signed single-frame message that arrives (with `hmac`, not the
kernel's code), connects to the reported ports, and acknowledges. Bad registration files, a
registrar that never answers and one that signs with another key each end the kernel within
seconds, with exit code 1 and a message that says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
import zmq
from kernel_process import check_session
from signing import hex_hmac

from async_kernel._enums import Channel
from async_kernel.wire._connection import (
    ConnectionFileError,
    RegistrationInfo,
    read_registration_file,
    read_startup_file,
)
from async_kernel.wire._frames import DELIMITER
from async_kernel.wire._registration import registration_content

if TYPE_CHECKING:
    from collections.abc import Iterator

TIMEOUT = 30.0
KEY = b"registration-test-key"
PORT_NAMES = ("control_port", "shell_port", "stdin_port", "iopub_port", "hb_port")


class Registrar:
    """The launcher's side: a ROUTER on a port of its own, and the file that names it."""

    def __init__(self, directory: Path, transport: str = "tcp") -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.linger = 0
        if transport == "tcp":
            self.ip = "127.0.0.1"
            self.port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        else:
            self.ip, self.port = str(directory / "reg"), 1
            self.socket.bind(f"ipc://{self.ip}-{self.port}")
        self.transport = transport

    def file(self, path: Path, **fields: Any) -> Path:
        data = {
            "kernel_id": "k-0123",
            "transport": self.transport,
            "registration_ip": self.ip,
            "registration_port": self.port,
            "signature_scheme": "hmac-sha256",
            "key": KEY.decode(),
        } | fields
        path.write_text(json.dumps(data))
        return path

    def receive(self) -> tuple[bytes, dict[str, Any]]:
        """Wait for a registration; check its framing and signature; return (identity, content)."""
        assert self.socket.poll(TIMEOUT * 1000), "no registration arrived"
        frames = self.socket.recv_multipart()
        assert len(frames) == 4, frames
        identity, delimiter, signature, content = frames
        assert delimiter == DELIMITER
        assert signature == hex_hmac(KEY, content)  # HMAC of the one content frame
        return identity, json.loads(content)

    def acknowledge(self, identity: bytes, key: bytes = KEY) -> None:
        content = b'{"status": "ok"}'
        self.socket.send_multipart([identity, DELIMITER, hex_hmac(key, content), content])

    def close(self) -> None:
        if not self.context.closed:
            self.socket.close(linger=0)
            self.context.term()


@pytest.fixture
def registrar(tmp_path: Path) -> Iterator[Registrar]:
    r = Registrar(tmp_path)
    yield r
    r.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(f"/tmp/akr-{time.monotonic_ns()}")  # ipc paths must be short
    path.mkdir()
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


@pytest.fixture
def kernels() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=TIMEOUT)  # reaps it and closes its stderr pipe


def _start(
    kernels: list[subprocess.Popen[str]], runtime: Path, *args: str
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "async_kernel", "start", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"JUPYTER_RUNTIME_DIR": str(runtime)},
    )
    kernels.append(process)
    return process


def _wait_for_file(path: Path, process: subprocess.Popen[str]) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):  # not there yet (it is replaced whole, never half written)
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, f"{path} was never written"
            time.sleep(0.05)  # polling a file with a deadline, not ordering events


# --- the handshake ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["-f", "--registration-file"])
def test_the_kernel_registers_its_ports(
    registrar: Registrar, tmp_path: Path, kernels: list[subprocess.Popen[str]], how: str
) -> None:
    registration = registrar.file(tmp_path / "registration.json")
    runtime = tmp_path / "runtime"
    process = _start(kernels, runtime, how, str(registration))
    identity, content = registrar.receive()
    assert set(content) == {"kernel_id", *PORT_NAMES}
    assert content["kernel_id"] == "k-0123"
    ports = [content[name] for name in PORT_NAMES]
    assert all(isinstance(port, int) and port > 0 for port in ports)
    assert len(set(ports)) == 5
    # Bound before they were reported: the kernel listens on each of them, on loopback.
    listening = {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(process.pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    }
    assert {("127.0.0.1", port) for port in ports} <= listening
    registrar.acknowledge(identity)
    # After the acknowledgement the kernel writes its connection file for other clients.
    connection_file = runtime / "kernel-k-0123.json"
    data = _wait_for_file(connection_file, process)
    assert {name: data[name] for name in PORT_NAMES} == {n: content[n] for n in PORT_NAMES}
    assert data["key"] == KEY.decode()
    assert data["ip"] == "127.0.0.1"
    check_session(connection_file)
    assert process.wait(TIMEOUT) == 0
    assert not connection_file.exists()  # the kernel named it, so it removes it


def test_a_launcher_can_name_the_connection_file(
    registrar: Registrar, tmp_path: Path, kernels: list[subprocess.Popen[str]]
) -> None:
    registration = registrar.file(tmp_path / "registration.json")
    connection_file = tmp_path / "connection.json"
    args = ("--registration-file", str(registration), "-f", str(connection_file))
    process = _start(kernels, tmp_path / "runtime", *args)
    identity, content = registrar.receive()
    assert not connection_file.exists()  # written once the registrar has acknowledged
    registrar.acknowledge(identity)
    data = _wait_for_file(connection_file, process)
    assert data["shell_port"] == content["shell_port"]
    check_session(connection_file)
    assert process.wait(TIMEOUT) == 0
    assert connection_file.exists()  # the launcher's file: left to the launcher


def test_the_handshake_over_ipc(
    short_dir: Path, tmp_path: Path, kernels: list[subprocess.Popen[str]]
) -> None:
    registrar = Registrar(short_dir, transport="ipc")
    try:
        registration = registrar.file(tmp_path / "registration.json")
        process = _start(kernels, tmp_path / "runtime", "-f", str(registration))
        identity, content = registrar.receive()
        for name in PORT_NAMES:
            assert Path(f"{registrar.ip}-{content[name]}").exists()
        registrar.acknowledge(identity)
        connection_file = tmp_path / "runtime" / "kernel-k-0123.json"
        data = _wait_for_file(connection_file, process)
        assert data["transport"] == "ipc"
        assert data["ip"] == registrar.ip
        check_session(connection_file)
        assert process.wait(TIMEOUT) == 0
    finally:
        registrar.close()


# --- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("registrar_state", ["silent", "absent"])
def test_no_acknowledgement_ends_the_kernel_in_time(
    registrar: Registrar, tmp_path: Path, kernels: list[subprocess.Popen[str]], registrar_state: str
) -> None:
    registration = registrar.file(tmp_path / "registration.json")
    if registrar_state == "absent":
        registrar.close()  # nothing listens on the port any more
    start = time.monotonic()
    process = _start(
        kernels, tmp_path / "runtime", "-f", str(registration), "--Kernel.registration_timeout=1"
    )
    if registrar_state == "silent":
        registrar.receive()  # it arrives, and is never answered
    _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 1
    assert time.monotonic() - start < 20
    assert (
        "async-kernel: error: cannot start the kernel: no acknowledgement from the registrar" in err
    )
    assert f"tcp://127.0.0.1:{registrar.port} within 1 s" in err
    assert "Traceback" not in err
    assert not (tmp_path / "runtime" / "kernel-k-0123.json").exists()


def test_an_acknowledgement_with_another_key_is_refused(
    registrar: Registrar, tmp_path: Path, kernels: list[subprocess.Popen[str]]
) -> None:
    registration = registrar.file(tmp_path / "registration.json")
    process = _start(kernels, tmp_path / "runtime", "-f", str(registration))
    identity, _ = registrar.receive()
    registrar.acknowledge(identity, key=b"some-other-key")
    _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 1
    assert "acknowledged with a wrong signature" in err
    assert not (tmp_path / "runtime" / "kernel-k-0123.json").exists()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"registration_port": 5000, "kernel_id": "k", "key": "k"', "not JSON (half written?)"),
        ('{"registration_port": 5000, "key": "k"}', "needs a kernel_id"),
        ('{"registration_port": 0, "kernel_id": "k"}', "registration_port must be given"),
        ('{"registration_port": "5000", "kernel_id": "k"}', "registration_port must be a port"),
        ('{"registration_port": 1, "kernel_id": "k", "transport": "udp"}', "unknown transport"),
        ('{"registration_port": 1, "kernel_id": "k", "registration_ip": 1}', "must be a string"),
    ],
)
def test_a_bad_registration_file_is_a_clear_error(
    tmp_path: Path, kernels: list[subprocess.Popen[str]], text: str, match: str
) -> None:
    path = tmp_path / "registration.json"
    path.write_text(text)
    process = _start(kernels, tmp_path / "runtime", "--registration-file", str(path))
    _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 1
    assert "async-kernel: error: cannot start the kernel" in err
    assert match in err
    assert "Traceback" not in err


# --- units -----------------------------------------------------------------------------------


def test_a_registration_file_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "registration.json"
    path.write_text(json.dumps({"kernel_id": "abc", "registration_port": 51587, "key": "s"}))
    info = read_startup_file(path)
    assert isinstance(info, RegistrationInfo)
    assert info == read_registration_file(path)
    assert info.url() == "tcp://127.0.0.1:51587"
    connection = info.connection()
    assert connection.ip == "127.0.0.1"
    assert set(connection.ports.values()) == {0}
    assert connection.key == b"s"


@pytest.mark.parametrize(
    ("fields", "bind_ip"),
    [
        ({"registration_ip": "127.0.0.1"}, "127.0.0.1"),
        ({"registration_ip": "localhost"}, "127.0.0.1"),
        ({"registration_ip": "::1"}, "::1"),
        ({"registration_ip": "10.1.2.3"}, "0.0.0.0"),
        ({"registration_ip": "fd00::7"}, "::"),
        ({"registration_ip": "launcher.example"}, "0.0.0.0"),
        ({"registration_ip": "10.1.2.3", "ip": "10.9.9.9"}, "10.9.9.9"),
    ],
)
def test_where_the_kernel_binds(fields: dict[str, str], bind_ip: str) -> None:
    info = RegistrationInfo(kernel_id="k", registration_port=1, **fields)
    assert info.bind_ip() == bind_ip


def test_the_content_frame() -> None:
    ports = {Channel.shell: 1, Channel.iopub: 2, Channel.stdin: 3}
    ports |= {Channel.control: 4, Channel.heartbeat: 5}
    content = json.loads(registration_content("kid", ports))
    assert content == {
        "kernel_id": "kid",
        "control_port": 4,
        "shell_port": 1,
        "stdin_port": 3,
        "iopub_port": 2,
        "hb_port": 5,
    }


def test_a_connection_file_is_not_a_registration_file(tmp_path: Path) -> None:
    path = tmp_path / "kernel.json"
    path.write_text(json.dumps({"shell_port": 5000, "key": "k"}))
    assert not isinstance(read_startup_file(path), RegistrationInfo)
    with pytest.raises(ConnectionFileError, match="needs a kernel_id"):
        read_registration_file(path)
