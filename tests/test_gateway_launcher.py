"""Enterprise Gateway's launcher contract, with the test as the gateway.

`FakeGateway` does what Enterprise Gateway's remote process proxies do, with code of its own:
an RSA key pair (1024 bits, as the gateway's) whose public half goes on the command line as a
PEM body, a listening response socket that receives the launcher's payload and decrypts it
(RSA PKCS#1 v1.5 for the AES key, AES-ECB for the connection info), a client on the reported
ports (with the gateway's own `ip`, as it replaces the launcher's `0.0.0.0`), and requests on
the comm port sent as the gateway sends them (one JSON object per connection). Bad arguments
and an unreachable gateway end the launcher within seconds, with a message that says why and
nothing left behind.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import zmq
from Cryptodome.Cipher import AES, PKCS1_v1_5
from Cryptodome.PublicKey import RSA
from Cryptodome.Util.number import getPrime
from Cryptodome.Util.Padding import unpad
from jupyter_client.blocking.client import BlockingKernelClient
from kernel_driver import TIMEOUT, Driver
from kernel_process import SIGINT_CHILD, gone, wait_gone

from async_kernel.gateway_launcher import PortRange, encrypt_connection_info, load_public_key

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.name != "posix", reason="process groups and signals are POSIX"),
]

LOW, HIGH = 45000, 46999
RANGE = f"{LOW}..{HIGH}"
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")
LAUNCHER = [sys.executable, "-m", "async_kernel.gateway_launcher"]


def pem_body(key: RSA.RsaKey) -> str:
    """The public key as the gateway passes it: its PEM without the header, footer, newlines."""
    pem = key.publickey().export_key("PEM").decode()
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


class FakeGateway:
    """The gateway's side: a key pair and the response socket the launcher reports to."""

    def __init__(self, key: RSA.RsaKey) -> None:
        self.key = key
        self.public_key = pem_body(key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(TIMEOUT)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def argv(self, kernel_id: str, **given: str) -> list[str]:
        """The launcher's command line as the gateway's kernelspecs write it."""
        values = {
            "kernel-id": kernel_id,
            "response-address": self.address,
            "public-key": self.public_key,
            "port-range": RANGE,
        } | given
        spelled = ((f"--RemoteProcessProxy.{name}", value) for name, value in values.items())
        return [*LAUNCHER, *(arg for pair in spelled for arg in pair)]

    def receive(self) -> dict[str, Any]:
        """Accept the launcher's connection, read until it closes, decrypt the payload."""
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            data = b""
            while chunk := conn.recv(1024):
                data += chunk
        return self.decrypt(data)

    def decrypt(self, data: bytes) -> dict[str, Any]:
        payload = json.loads(base64.b64decode(data))
        assert payload["version"] == 1
        sentinel = b"\x00" * 16
        aes_key = PKCS1_v1_5.new(self.key).decrypt(base64.b64decode(payload["key"]), sentinel)
        assert aes_key != sentinel
        assert len(aes_key) == 16
        body = AES.new(aes_key, AES.MODE_ECB).decrypt(base64.b64decode(payload["conn_info"]))
        return json.loads(unpad(body, 16))

    def close(self) -> None:
        self.sock.close()


def send_request(port: int, request: dict[str, Any] | bytes, *, close_write: bool = False) -> None:
    """Send one comm port request as the gateway does (shutdown closes the write side first)."""
    data = request if isinstance(request, bytes) else json.dumps(request).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        if close_write:
            sock.shutdown(socket.SHUT_WR)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture(scope="module")
def rsa_key() -> RSA.RsaKey:
    return RSA.generate(1024)


@pytest.fixture
def gateway(rsa_key: RSA.RsaKey) -> Iterator[FakeGateway]:
    fake = FakeGateway(rsa_key)
    yield fake
    fake.close()


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(directory))
    return directory


class Launched:
    """A launcher started as the gateway starts it (a session of its own), and what it sent."""

    def __init__(self, proc: subprocess.Popen[bytes], info: dict[str, Any]) -> None:
        self.proc = proc
        self.info = info
        self.comm_port: int = info["comm_port"]

    def client(self) -> BlockingKernelClient:
        """A client on the reported ports, once the kernel answers.

        The report comes before the kernel has started: a heartbeat channel would call it
        dead before it could answer (the heartbeat is checked on its own).
        """
        kc = BlockingKernelClient()
        kc.load_connection_info(info=self.info | {"ip": "127.0.0.1"})
        kc.start_channels(hb=False)
        kc.wait_for_ready(timeout=60)
        return kc


@pytest.fixture
def launched(gateway: FakeGateway, runtime: Path) -> Iterator[Launched]:
    proc = subprocess.Popen(gateway.argv("k-1234"), start_new_session=True)
    try:
        yield Launched(proc, gateway.receive())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(TIMEOUT)


def test_the_gateway_gets_connection_info_that_works(launched: Launched, runtime: Path) -> None:
    info = launched.info
    assert info["kernel_id"] == "k-1234"
    assert info["pid"] == launched.proc.pid
    assert info["pgid"] == os.getpgid(launched.proc.pid) == launched.proc.pid
    assert info["ip"] == "0.0.0.0"
    assert info["transport"] == "tcp"
    assert info["signature_scheme"] == "hmac-sha256"
    assert len(info["key"]) >= 32
    ports = [info[name] for name in PORT_NAMES] + [info["comm_port"]]
    assert all(LOW <= port <= HIGH for port in ports), ports
    assert len(set(ports)) == 6
    files = list(runtime.iterdir())
    assert [f.name for f in files] == ["kernel-k-1234.json"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    written = json.loads(files[0].read_text())
    assert written.items() <= info.items()
    kc = launched.client()
    try:
        assert Driver(kc).run("print(6 * 7)") == "42\n"
    finally:
        kc.stop_channels()
    context = zmq.Context()
    hb = context.socket(zmq.REQ)
    try:
        hb.connect(f"tcp://127.0.0.1:{info['hb_port']}")
        hb.send(b"ping")
        assert hb.poll(TIMEOUT * 1000)
        assert hb.recv() == b"ping"
    finally:
        hb.close(linger=0)
        context.term()


def test_sigint_on_the_comm_port_interrupts_the_cell_and_its_child(
    launched: Launched, tmp_path: Path
) -> None:
    child, done = tmp_path / "child.py", tmp_path / "done"
    child.write_text(SIGINT_CHILD)
    kc = launched.client()
    try:
        driver = Driver(kc)
        msg_id = driver.execute(
            "import subprocess, sys\n"
            f"p = subprocess.Popen([sys.executable, {str(child)!r}, {str(done)!r}],"
            " stdout=subprocess.PIPE, text=True)\n"
            "assert p.stdout.readline() == 'child ready\\n'\n"
            "print('waiting', flush=True)\n"
            "p.wait()"
        )
        driver.wait_stdout(msg_id, "waiting")
        # Nothing that the listener cannot use stops it: polls, noise, a silent connection.
        send_request(launched.comm_port, {"signum": 0})
        send_request(launched.comm_port, b"not json")
        socket.create_connection(("127.0.0.1", launched.comm_port), timeout=5).close()
        started = time.monotonic()
        send_request(launched.comm_port, {"signum": signal.SIGINT})
        reply = driver.reply(msg_id)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - started < 10
        assert done.read_text() == "SIGINT"
        assert driver.run("print('still here')") == "still here\n"
        assert launched.proc.poll() is None
    finally:
        kc.stop_channels()


def test_a_shutdown_request_ends_the_kernel_and_the_launcher(
    launched: Launched, runtime: Path
) -> None:
    import psutil

    launched.client().stop_channels()  # the kernel is up
    (kernel,) = psutil.Process(launched.proc.pid).children()
    send_request(launched.comm_port, {"shutdown": 1}, close_write=True)
    assert launched.proc.wait(TIMEOUT) == 0
    assert wait_gone(kernel.pid, TIMEOUT)
    assert refused(launched.comm_port)  # the gateway's next poll: the kernel is gone
    assert list(runtime.iterdir()) == []


def test_after_a_shutdown_request_on_control_the_launcher_exits_too(launched: Launched) -> None:
    kc = launched.client()
    try:
        kc.shutdown()
        assert launched.proc.wait(TIMEOUT) == 0
    finally:
        kc.stop_channels()
    assert refused(launched.comm_port)


def test_sigterm_to_the_process_group_stops_kernel_and_launcher(launched: Launched) -> None:
    """The gateway's `terminate()`: `kill -TERM -PGID`, the launcher's group."""
    launched.client().stop_channels()  # the kernel is up
    os.killpg(launched.info["pgid"], signal.SIGTERM)
    assert launched.proc.wait(TIMEOUT) == 0
    assert gone(launched.proc.pid)


def test_a_kernel_that_fails_to_start_fails_the_launcher(
    gateway: FakeGateway, runtime: Path
) -> None:
    argv = [*gateway.argv("k-bad"), "--Kernel.backend=nonsense"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, start_new_session=True)
    info = gateway.receive()
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode != 0
    assert b"nonsense" in err
    assert refused(info["comm_port"])
    assert list(runtime.iterdir()) == []


# --- bad input -------------------------------------------------------------------------------


def run_launcher(argv: list[str]) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return done.returncode, done.stderr, time.monotonic() - started


@pytest.mark.parametrize(
    ("port_range", "says"),
    [
        ("45000-46000", "is not LOW..HIGH"),
        ("abc", "is not LOW..HIGH"),
        ("45000..46000..47000", "is not LOW..HIGH"),
        ("46000..45000", "1 <= LOW < HIGH <= 65535"),
        ("0..70000", "1 <= LOW < HIGH <= 65535"),
        ("45000..45010", "holds 10 ports; the gateway requires at least 1000"),
    ],
)
def test_a_malformed_port_range_is_a_usage_error(
    gateway: FakeGateway, runtime: Path, port_range: str, says: str
) -> None:
    code, err, took = run_launcher(gateway.argv("k", **{"port-range": port_range}))
    assert code == 2
    assert says in err
    assert took < 10
    assert not runtime.exists()


def _small_key() -> str:
    p, q = getPrime(256), getPrime(256)
    return base64.b64encode(RSA.construct((p * q, 65537)).export_key("DER")).decode()


@pytest.mark.parametrize(
    ("make_key", "says"),
    [
        (lambda key: "not a key!", "is not base64"),
        (lambda key: base64.b64encode(os.urandom(162)).decode(), "is not an RSA public key"),
        (lambda key: pem_body(key)[:100], "is not an RSA public key"),
        (lambda key: _small_key(), "-bit RSA key: at least 1024 bits are needed"),
        (
            lambda key: base64.b64encode(key.export_key("DER")).decode(),
            "holds a private key",
        ),
    ],
    ids=["garbage", "random-bytes", "truncated", "512-bit", "private"],
)
def test_a_bad_public_key_is_a_usage_error(
    gateway: FakeGateway, runtime: Path, rsa_key: RSA.RsaKey, make_key: Any, says: str
) -> None:
    code, err, took = run_launcher(gateway.argv("k", **{"public-key": make_key(rsa_key)}))
    assert code == 2
    assert says in err
    assert took < 10
    assert not runtime.exists()


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:", "127.0.0.1:0", ":9000"])
def test_a_malformed_response_address_is_a_usage_error(
    gateway: FakeGateway, runtime: Path, address: str
) -> None:
    code, err, _ = run_launcher(gateway.argv("k", **{"response-address": address}))
    assert code == 2
    assert "is not HOST:PORT" in err


def test_an_unreachable_response_address_fails_within_seconds(
    gateway: FakeGateway, runtime: Path
) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    code, err, took = run_launcher(gateway.argv("k", **{"response-address": f"127.0.0.1:{port}"}))
    assert code == 1
    assert f"cannot send the connection info to the response address 127.0.0.1:{port}" in err
    assert "refused" in err
    assert took < 10
    assert list(runtime.iterdir()) == []  # the connection file is removed again


def test_missing_arguments_are_usage_errors(gateway: FakeGateway) -> None:
    code, err, _ = run_launcher([*LAUNCHER, "--port-range", RANGE])
    assert code == 2
    assert "--kernel-id" in err
    code, err, _ = run_launcher([*gateway.argv("k"), "--no-such-option"])
    assert code == 2
    assert "unrecognized arguments: --no-such-option" in err
    code, err, _ = run_launcher([*gateway.argv("k"), "--response-timeout", "0"])
    assert code == 2
    assert "--response-timeout must be positive" in err
    code, err, _ = run_launcher([*gateway.argv("k"), "--ip", "not-an-ip"])
    assert code == 2
    assert "--ip 'not-an-ip' is not an IP address" in err
    code, err, _ = run_launcher([*gateway.argv("k"), "--cluster-type", "dask"])
    assert code == 2
    assert "starts no Spark or Dask context" in err


def test_without_pycryptodomex_the_launcher_names_the_extra(gateway: FakeGateway) -> None:
    hide = (
        "import runpy, sys; sys.modules['Cryptodome'] = None; "
        "runpy.run_module('async_kernel.gateway_launcher', run_name='__main__')"
    )
    argv = gateway.argv("k")
    code, err, _ = run_launcher([sys.executable, "-c", hide, *argv[len(LAUNCHER) :]])
    assert code == 1
    assert "pycryptodomex" in err
    assert "pip install 'async-kernel[gateway]'" in err


# --- the pieces ------------------------------------------------------------------------------


def test_port_ranges() -> None:
    assert PortRange.parse("") == PortRange(0, 0)
    assert not PortRange.parse("0..0").restricted
    assert not PortRange.parse("33245..33245").restricted
    assert PortRange.parse("100..200", min_size=100) == PortRange(100, 200)
    with pytest.raises(ValueError, match="holds 99 ports"):
        PortRange.parse("100..199", min_size=100)
    socks = [PortRange(LOW, HIGH).bind("127.0.0.1", retries=5) for _ in range(3)]
    try:
        assert all(LOW <= s.getsockname()[1] <= HIGH for s in socks)
    finally:
        for s in socks:
            s.close()


def test_the_payload_decrypts_with_the_gateways_key(gateway: FakeGateway) -> None:
    info = {"shell_port": 1, "key": "k", "kernel_id": "x" * 500}
    payload = encrypt_connection_info(info, load_public_key(gateway.public_key))
    assert gateway.decrypt(payload) == info
    pem = gateway.key.publickey().export_key("PEM").decode()
    assert load_public_key(pem).n == gateway.key.n  # a whole PEM is taken too
