"""CurveZMQ transport encryption: the connection file's keys, and a kernel that refuses plaintext.

The end-to-end tests start the kernel with jupyter_client's `transport_encryption = "required"`
(which refuses a kernelspec without `metadata.supported_encryption: ["curve"]`), so the keys
are the ones jupyter_client provisions and the clients are jupyter_client's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import zmq
from jupyter_client.connect import write_connection_file as jc_write_connection_file
from jupyter_client.manager import KernelManager
from kernel_logs import wait_for_log
from signing import signed

from async_kernel.wire._connection import (
    ConnectionFileError,
    ConnectionInfo,
    read_connection_file,
    write_connection_file,
)
from async_kernel.wire._curve import CurveKeys, curve_keys_from

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jupyter_client.blocking.client import BlockingKernelClient

TIMEOUT = 30.0

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="this libzmq has no CurveZMQ")


def _pair() -> tuple[str, str]:
    public, secret = zmq.curve_keypair()
    return public.decode(), secret.decode()


# --- the connection file's keys -------------------------------------------------------------


def test_keys_written_by_jupyter_client_are_read(tmp_path: Path) -> None:
    public, secret = zmq.curve_keypair()
    path = tmp_path / "kernel.json"
    jc_write_connection_file(str(path), key=b"k", curve_publickey=public, curve_secretkey=secret)
    info = read_connection_file(path)
    assert info.curve == CurveKeys(public=public, secret=secret)


def test_no_keys_is_no_encryption(tmp_path: Path) -> None:
    path = tmp_path / "kernel.json"
    jc_write_connection_file(str(path), key=b"k")
    assert read_connection_file(path).curve is None
    assert curve_keys_from({"curve_publickey": None, "curve_secretkey": None}) is None


def test_keys_survive_the_write_back(tmp_path: Path) -> None:
    """The file the kernel writes (ports chosen) keeps the keys, in jupyter_client's fields."""
    public, secret = _pair()
    info = ConnectionInfo(key=b"k", curve=CurveKeys(public.encode(), secret.encode()))
    path = tmp_path / "kernel.json"
    write_connection_file(path, info)
    data = json.loads(path.read_text())
    assert data["curve_publickey"] == public
    assert data["curve_secretkey"] == secret
    assert read_connection_file(path).curve == info.curve


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"curve_publickey": "P"}, "curve_publickey is given without curve_secretkey"),
        ({"curve_secretkey": "S"}, "curve_secretkey is given without curve_publickey"),
        ({"curve_publickey": "short", "curve_secretkey": "S"}, "40-character Z85 string, not 5"),
        ({"curve_publickey": "P", "curve_secretkey": 42}, "curve_secretkey must be a 40-char"),
        ({"curve_publickey": "P", "curve_secretkey": "~" * 40}, "curve_secretkey is not Z85"),
        ({"curve_publickey": "P", "curve_secretkey": "#" * 40}, "curve_secretkey is not Z85"),
        ({"curve_publickey": "OTHER", "curve_secretkey": "S"}, "not the public key of"),
    ],
)
def test_unusable_keys_are_refused(tmp_path: Path, fields: dict[str, Any], match: str) -> None:
    public, secret = _pair()
    other, _ = _pair()
    real = {"P": public, "S": secret, "OTHER": other}
    data = {"key": "k"} | {name: real.get(value, value) for name, value in fields.items()}
    path = tmp_path / "kernel.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConnectionFileError, match=match) as caught:
        read_connection_file(path)
    assert str(path) in str(caught.value)
    assert secret not in str(caught.value)  # a secret never goes into an error message


def test_a_bad_key_stops_the_kernel_with_a_clear_error(tmp_path: Path) -> None:
    public, _ = _pair()
    path = tmp_path / "kernel.json"
    jc_write_connection_file(str(path), key=b"k")
    data = json.loads(path.read_text()) | {"curve_publickey": public, "curve_secretkey": "x" * 39}
    path.write_text(json.dumps(data))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "async_kernel", "start", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot start the kernel" in result.stderr
    assert "curve_secretkey must be a 40-character Z85 string, not 39 characters" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 15


# --- a kernel with transport_encryption = "required" ------------------------------------------


@pytest.fixture(params=["tcp", "ipc"])
def encrypted(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KernelManager, BlockingKernelClient, Path]]:
    """A kernel started by jupyter_client with Curve keys, its client, and its stderr log."""
    log = tmp_path_factory.mktemp("curve") / "stderr.log"
    km = KernelManager(kernel_name="async", transport_encryption="required")
    if request.param == "ipc":
        km.transport = "ipc"
        km.ip = f"/tmp/akc-{os.getpid()}"  # ipc paths must be short
    with log.open("wb") as err:  # open while the kernel runs: a restart writes to it too
        km.start_kernel(stderr=err)
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=TIMEOUT)
            yield km, kc, log
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)


def test_a_session_works_end_to_end(
    encrypted: tuple[KernelManager, BlockingKernelClient, Path],
) -> None:
    km, kc, _ = encrypted
    info = km.get_connection_info()
    assert info["curve_publickey"]
    assert info["curve_secretkey"]
    stdout: list[str] = []
    reply = kc.execute_interactive(
        "print(6 * 7)",
        timeout=TIMEOUT,
        output_hook=lambda m: stdout.append(m["content"].get("text", "")),
    )
    assert reply["content"]["status"] == "ok"
    assert "42\n" in stdout
    # stdin: an input request goes out and the answer comes back, encrypted both ways.
    msg_id = kc.execute("answer = input('? ')", allow_stdin=True)
    request = kc.get_stdin_msg(timeout=TIMEOUT)
    assert request["header"]["msg_type"] == "input_request"
    kc.input("forty-two")
    assert _reply(kc, msg_id)["content"]["status"] == "ok"
    assert (
        kc.execute_interactive("assert answer == 'forty-two'", timeout=TIMEOUT)["content"]["status"]
        == "ok"
    )
    # control: kernel_info there, and the heartbeat (its own REQ with a fresh client key).
    kc.control_channel.send(kc.session.msg("kernel_info_request"))
    assert kc.control_channel.get_msg(timeout=TIMEOUT)["msg_type"] == "kernel_info_reply"
    assert _echoes(info)
    _wait_beating(kc)
    # Interrupt (a signal here) and restart keep the keys.
    km.restart_kernel(now=False)
    kc.wait_for_ready(timeout=TIMEOUT)
    assert km.get_connection_info()["curve_publickey"] == info["curve_publickey"]
    assert kc.execute_interactive("1", timeout=TIMEOUT)["content"]["status"] == "ok"


def _reply(kc: BlockingKernelClient, msg_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        msg = kc.get_shell_msg(timeout=TIMEOUT)
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg
    raise TimeoutError(msg_id)


def _echoes(info: dict[str, Any]) -> bool:
    """Whether the heartbeat echoes a ping sent with the server's key (a fresh client key)."""
    context = zmq.Context()
    sock = context.socket(zmq.REQ)
    try:
        sock.linger = 0
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
        server = info["curve_publickey"]
        sock.curve_serverkey = server.encode() if isinstance(server, str) else server
        sock.connect(_url(info, "hb"))
        sock.send(b"ping")
        return bool(sock.poll(TIMEOUT * 1000)) and sock.recv() == b"ping"
    finally:
        sock.close(linger=0)
        context.term()


def _wait_beating(kc: BlockingKernelClient) -> None:
    """Wait until jupyter_client's heartbeat channel beats (it misses the beats of startup)."""
    deadline = time.monotonic() + TIMEOUT
    while not kc.hb_channel.is_beating():
        assert time.monotonic() < deadline, "jupyter_client's heartbeat never beat"
        time.sleep(0.05)  # polling a flag with a deadline, not ordering events


_SOCKET_TYPES = {"shell": zmq.DEALER, "control": zmq.DEALER, "stdin": zmq.DEALER}
_SOCKET_TYPES |= {"iopub": zmq.SUB, "hb": zmq.REQ}


def _url(info: dict[str, Any], channel: str) -> str:
    port = info[f"{channel}_port"]
    if info["transport"] == "ipc":
        return f"ipc://{info['ip']}-{port}"
    return f"tcp://{info['ip']}:{port}"


@pytest.mark.parametrize("peer", ["plaintext", "wrong server key"])
def test_other_peers_get_nothing_and_the_kernel_logs_them(
    encrypted: tuple[KernelManager, BlockingKernelClient, Path], peer: str, tmp_path: Path
) -> None:
    """On every channel, heartbeat included: refused before a single message, with a log line."""
    km, kc, log = encrypted
    info = km.get_connection_info()
    key = info["key"] if isinstance(info["key"], bytes) else info["key"].encode()
    marker = tmp_path / "ran"
    context = zmq.Context()
    sockets: dict[str, zmq.Socket[bytes]] = {}
    try:
        for channel, kind in _SOCKET_TYPES.items():
            sock = sockets[channel] = context.socket(kind)
            sock.linger = 0
            if peer == "wrong server key":
                public, secret = zmq.curve_keypair()
                sock.curve_publickey, sock.curve_secretkey = public, secret
                sock.curve_serverkey = zmq.curve_keypair()[0]
            if kind == zmq.SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(_url(info, channel))
        # Correctly signed requests: only the transport stands between them and the kernel.
        header = json.dumps(
            {
                "msg_id": "plain-1",
                "msg_type": "execute_request",
                "session": "s",
                "username": "u",
                "date": "2024-01-01T00:00:00Z",
                "version": "5.4",
            }
        ).encode()
        code = json.dumps({"code": f"open({str(marker)!r}, 'w').close()", "silent": False})
        for channel in ("shell", "control"):
            sockets[channel].send_multipart(signed(key, header, b"{}", b"{}", code.encode()))
        sockets["hb"].send(b"ping")
        # (libzmq's reason varies with who hangs up first, so the line is matched without it.)
        for channel in _SOCKET_TYPES:
            wait_for_log(log, f"refused a connection on {channel} (", timeout=TIMEOUT)
        for channel, sock in sockets.items():
            assert not sock.poll(0), f"{channel} received something"
    finally:
        for sock in sockets.values():
            sock.close(linger=0)
        context.term()
    # The kernel never saw the requests, and still serves its real clients.
    check = f"import os; assert not os.path.exists({str(marker)!r})"
    assert kc.execute_interactive(check, timeout=TIMEOUT)["content"]["status"] == "ok"
    assert _echoes(info)
    assert km.is_alive()
