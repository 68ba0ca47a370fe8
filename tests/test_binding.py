"""Connection info as given: the kernel binds the ip and ports of its file, exactly, or exits.

Launchers on other hosts (gateways, SSH tunnels, containers) write the ports down before the
kernel starts, and their clients connect there: a kernel that quietly took other ports would be
unreachable. Each test writes a connection file, starts `async-kernel start -f` and checks the
listening sockets of the kernel process (psutil) and a session over them.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from kernel_logs import wait_for_log
from kernel_process import check_session

if TYPE_CHECKING:
    from collections.abc import Iterator

TIMEOUT = 30.0
PORT_KEYS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def _free_ports(family: socket.AddressFamily, host: str, count: int = 5) -> list[int]:
    """Ports that are free now on `host` (bound and released: a launcher does the same)."""
    sockets = [socket.socket(family, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _interface_address() -> str | None:
    """An IPv4 address of this machine's interfaces other than loopback, if there is one."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return None


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def kernel_dir(tmp_path: Path) -> Path:
    return tmp_path


def _start(directory: Path, info: dict[str, Any]) -> tuple[subprocess.Popen[bytes], Path, Path]:
    connection_file = directory / "kernel.json"
    connection_file.write_text(json.dumps(info))
    log = directory / "stderr.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "async_kernel", "start", "-f", str(connection_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return process, connection_file, log


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Kernel processes a test started; killed at the end if they still run."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(TIMEOUT)


def _listening(pid: int, count: int) -> set[tuple[str, int]]:
    """The tcp addresses `pid` listens on, once there are `count` of them."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        }
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)  # polling the kernel's sockets with a deadline, not ordering events


def _info(ip: str, ports: list[int], **extra: Any) -> dict[str, Any]:
    return (
        dict(zip(PORT_KEYS, ports, strict=True))
        | {
            "ip": ip,
            "transport": "tcp",
            "key": "binding-test-key",
            "signature_scheme": "hmac-sha256",
        }
        | extra
    )


_INTERFACE = _interface_address()
_CASES = [
    pytest.param("127.0.0.1", socket.AF_INET, "127.0.0.1", id="loopback"),
    pytest.param("0.0.0.0", socket.AF_INET, "127.0.0.1", id="all-interfaces"),
    pytest.param(
        _INTERFACE or "",
        socket.AF_INET,
        _INTERFACE,
        id="interface-address",
        marks=pytest.mark.skipif(_INTERFACE is None, reason="no interface besides loopback"),
    ),
    pytest.param(
        "::1",
        socket.AF_INET6,
        "::1",
        id="ipv6-loopback",
        marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback"),
    ),
]


@pytest.mark.parametrize(("ip", "family", "connect_to"), _CASES)
def test_fixed_ports_are_bound_exactly(
    kernel_dir: Path,
    started: list[subprocess.Popen[bytes]],
    ip: str,
    family: socket.AddressFamily,
    connect_to: str,
) -> None:
    bind_host = "0.0.0.0" if ip == "0.0.0.0" else ip
    ports = _free_ports(family, bind_host)
    process, connection_file, _ = _start(kernel_dir, _info(ip, ports))
    started.append(process)
    before = connection_file.read_bytes()
    listening = _listening(process.pid, len(ports))
    assert listening == {(ip, port) for port in ports}
    assert connection_file.read_bytes() == before  # every port was given: nothing written
    check_session(connection_file, ip=connect_to, ipv6=family == socket.AF_INET6)
    assert process.wait(TIMEOUT) == 0


def test_ipc_paths_are_bound_exactly(started: list[subprocess.Popen[bytes]]) -> None:
    directory = Path(f"/tmp/akb-{time.monotonic_ns()}")  # ipc paths must be short
    directory.mkdir()
    try:
        base = str(directory / "k")
        ports = [11, 12, 13, 14, 15]
        process, connection_file, _ = _start(directory, _info(base, ports, transport="ipc"))
        started.append(process)
        deadline = time.monotonic() + TIMEOUT
        while not all(Path(f"{base}-{port}").exists() for port in ports):
            assert process.poll() is None
            assert time.monotonic() < deadline, list(directory.iterdir())
            time.sleep(0.05)  # polling for the socket files, with a deadline
        assert sorted(p.name for p in directory.glob("k-*")) == [f"k-{port}" for port in ports]
        check_session(connection_file)
        assert process.wait(TIMEOUT) == 0
    finally:
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()


@pytest.mark.parametrize("channel", ["shell_port", "hb_port"])
def test_a_port_in_use_is_an_error_not_another_port(
    kernel_dir: Path, started: list[subprocess.Popen[bytes]], channel: str
) -> None:
    ports = _free_ports(socket.AF_INET, "127.0.0.1")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    ports[PORT_KEYS.index(channel)] = taken
    try:
        start = time.monotonic()
        process, connection_file, log = _start(kernel_dir, _info("127.0.0.1", ports))
        started.append(process)
        before = connection_file.read_bytes()
        assert process.wait(TIMEOUT) == 1
        assert time.monotonic() - start < 15
    finally:
        holder.close()
    name = channel.removesuffix("_port")
    line = wait_for_log(log, "async-kernel: error: cannot start the kernel", timeout=1)
    assert f"cannot bind the {name} socket to tcp://127.0.0.1:{taken}" in line
    assert "Address already in use" in line
    assert "Traceback" not in log.read_text()
    assert connection_file.read_bytes() == before


def test_an_address_of_another_machine_is_an_error(
    kernel_dir: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    foreign = "198.51.100.7"  # TEST-NET-2: documentation only, never an interface
    assert all(
        ipaddress.ip_address(a.address) != ipaddress.ip_address(foreign)
        for addresses in psutil.net_if_addrs().values()
        for a in addresses
        if a.family == socket.AF_INET
    )
    process, _, log = _start(kernel_dir, _info(foreign, [0] * 5))
    started.append(process)
    assert process.wait(TIMEOUT) == 1
    line = wait_for_log(log, "async-kernel: error: cannot start the kernel", timeout=1)
    assert f"cannot bind the shell socket to tcp://{foreign}:*" in line
    assert "not one of this machine's interfaces" in line
