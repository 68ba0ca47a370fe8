"""Kernels behind a gateway: Jupyter Kernel Gateway runs our kernelspec, a Jupyter Server uses it.

The deployment a team uses when kernels run elsewhere: `jupyter kernelgateway` on one host owns
the kernel processes; a Jupyter Server started with `--gateway-url` forwards its REST and
websocket API there. Here both run on 127.0.0.1 with tokens, and the test talks to the server
only, as JupyterLab would: kernelspecs, start, the websocket channels (execute, a `##thread`
cell, a subshell, comms, stdin), interrupt, restart and shutdown. The kernelspec is installed
in both interrupt modes: a gateway's kernel manager interrupts `message` kernels with an
`interrupt_request`, `signal` kernels with SIGINT.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import websocket

from async_kernel import kernelspec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = [pytest.mark.gateway, pytest.mark.timeout(240)]

TIMEOUT = 30.0
SERVER_TOKEN = "server-token-for-the-test"
GATEWAY_TOKEN = "gateway-token-for-the-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Http:
    """A token-authenticated JSON client of a Jupyter REST API."""

    port: int
    token: str

    def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            data = response.read()
            return response.status, json.loads(data) if data else None

    def wait_up(self, process: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + 90
        while True:
            try:
                self("GET", "/api")
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)  # polling a server that starts, with a deadline
            else:
                return


@dataclass
class Servers:
    """The gateway, the server that forwards to it, and their logs."""

    server: Http
    gateway: Http
    logs: Path


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("gateway")
    prefix = root / "prefix"
    kernelspec.install("async-signal", prefix=prefix, interrupt_mode="signal")
    kernelspec.install("async-message", prefix=prefix, interrupt_mode="message")
    env = os.environ | {
        "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "JUPYTER_DATA_DIR": str(root / "data"),
    }
    gateway, server = Http(_free_port(), GATEWAY_TOKEN), Http(_free_port(), SERVER_TOKEN)
    root_flag = ["--allow-root"] if os.geteuid() == 0 else []
    commands = {
        "gateway": [
            sys.executable,
            "-m",
            "kernel_gateway",
            "--KernelGatewayApp.ip=127.0.0.1",
            f"--KernelGatewayApp.port={gateway.port}",
            "--KernelGatewayApp.port_retries=0",
            f"--KernelGatewayApp.auth_token={GATEWAY_TOKEN}",
            "--JupyterWebsocketPersonality.list_kernels=True",  # what the server asks for
        ],
        "server": [
            sys.executable,
            "-m",
            "jupyter_server",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={server.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={SERVER_TOKEN}",
            "--no-browser",
            *root_flag,
            f"--gateway-url=http://127.0.0.1:{gateway.port}",
            f"--GatewayClient.auth_token={GATEWAY_TOKEN}",
        ],
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, http in (("gateway", gateway), ("server", server)):
            log = root / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    commands[name], env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT
                )
            processes.append(process)
            http.wait_up(process, log)
        yield Servers(server=server, gateway=gateway, logs=root)
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(TIMEOUT)


class Channels:
    """The websocket of one kernel, as JupyterLab opens it: messages filed by their parent."""

    def __init__(self, servers: Servers, kernel_id: str) -> None:
        self.session = uuid.uuid4().hex
        url = f"ws://127.0.0.1:{servers.server.port}/api/kernels/{kernel_id}/channels"
        self.ws = websocket.create_connection(
            f"{url}?session_id={self.session}",
            header={"Authorization": f"token {SERVER_TOKEN}"},
            timeout=TIMEOUT,
        )
        self.by_parent: dict[str, list[dict[str, Any]]] = {}

    def close(self) -> None:
        self.ws.close()

    def send(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        *,
        header: dict[str, Any] | None = None,
    ) -> str:
        msg_id = uuid.uuid4().hex
        msg_header = {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "username": "test",
            "session": self.session,
            "date": "2026-01-01T00:00:00.000000Z",
            "version": "5.5",
        } | (header or {})
        message = {"header": msg_header, "parent_header": {}, "metadata": {}, "content": content}
        self.ws.send(json.dumps(message | {"channel": channel, "buffers": []}))
        return msg_id

    def execute(self, code: str, **header: Any) -> str:
        content = {"code": code, "silent": False, "store_history": True, "allow_stdin": True}
        return self.send("shell", "execute_request", content, header=header)

    def wait(self, check: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := check()):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out waiting for {what}"
            self.ws.settimeout(remaining)
            try:
                msg = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            parent = msg.get("parent_header", {}).get("msg_id", "")
            self.by_parent.setdefault(parent, []).append(msg)
        return found

    def of(self, msg_id: str, msg_type: str) -> list[dict[str, Any]]:
        return [m for m in self.by_parent.get(msg_id, []) if m["msg_type"] == msg_type]

    def reply(self, msg_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Wait for the reply and the idle status of `msg_id`; return the reply's content."""

        def answered() -> dict[str, Any] | None:
            messages = self.by_parent.get(msg_id, [])
            idle = any(m["content"].get("execution_state") == "idle" for m in messages)
            replies = [m for m in messages if m["msg_type"].endswith("_reply")]
            return replies[0]["content"] if idle and replies else None

        return self.wait(answered, f"the reply and idle of {msg_id}", timeout)

    def wait_ready(self) -> None:
        """Do what a frontend does after a (re)start: kernel_info until iopub answers too."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            msg_id = self.send("shell", "kernel_info_request", {})
            try:
                self.reply(msg_id, timeout=1)
            except AssertionError:  # the new process is not up, or iopub not subscribed yet
                assert time.monotonic() < deadline, "the kernel never became ready"
            else:
                return

    def stdout(self, msg_id: str) -> str:
        return "".join(m["content"]["text"] for m in self.of(msg_id, "stream"))

    def run(self, code: str, **header: Any) -> str:
        msg_id = self.execute(code, **header)
        content = self.reply(msg_id)
        assert content["status"] == "ok", content
        return self.stdout(msg_id)


def test_the_gateway_serves_our_kernelspecs(servers: Servers) -> None:
    status, specs = servers.server("GET", "/api/kernelspecs")
    assert status == 200
    for name, mode in (("async-signal", "signal"), ("async-message", "message")):
        spec = specs["kernelspecs"][name]["spec"]
        assert spec["interrupt_mode"] == mode
        assert spec["metadata"]["supported_encryption"] == ["curve"]
        assert spec["argv"][1:4] == ["-m", "async_kernel", "start"]


@pytest.mark.parametrize("spec", ["async-signal", "async-message"])
def test_a_session_through_the_gateway(servers: Servers, spec: str) -> None:
    status, kernel = servers.server("POST", "/api/kernels", {"name": spec})
    assert status == 201
    kernel_id = kernel["id"]
    # The kernel runs on the gateway, not in the server.
    assert kernel_id in {k["id"] for k in servers.gateway("GET", "/api/kernels")[1]}
    channels = Channels(servers, kernel_id)
    try:
        channels.wait_ready()
        _session(servers, channels, kernel_id)
    finally:
        channels.close()
    assert servers.server("DELETE", f"/api/kernels/{kernel_id}")[0] == 204
    assert kernel_id not in {k["id"] for k in servers.server("GET", "/api/kernels")[1]}
    assert kernel_id not in {k["id"] for k in servers.gateway("GET", "/api/kernels")[1]}


def _session(servers: Servers, channels: Channels, kernel_id: str) -> None:
    # A cell, then a `##thread` cell: it runs on a worker thread.
    assert channels.run("print(6 * 7)") == "42\n"
    thread = channels.run("##thread\nimport threading\nprint(threading.current_thread().name)")
    assert thread.strip() != "MainThread"
    # A subshell (JEP 91), created on control and addressed by the header.
    reply = channels.reply(channels.send("control", "create_subshell_request", {}))
    subshell_id = reply["subshell_id"]
    name = channels.run(
        "import threading\nprint(threading.current_thread().name)", subshell_id=subshell_id
    )
    assert name.startswith("subshell-")
    # Comms: a target in the kernel echoes what the frontend sends.
    channels.run(
        "import comm\n"
        "def _echo(c, msg):\n"
        "    c.on_msg(lambda m: c.send({'echo': m['content']['data']}))\n"
        "comm.get_comm_manager().register_target('gateway-echo', _echo)"
    )
    comm_id = uuid.uuid4().hex
    channels.send(
        "shell", "comm_open", {"comm_id": comm_id, "target_name": "gateway-echo", "data": {}}
    )
    sent = channels.send("shell", "comm_msg", {"comm_id": comm_id, "data": {"n": 7}})
    echo = channels.wait(lambda: channels.of(sent, "comm_msg"), "the comm's echo")
    assert echo[0]["content"]["data"] == {"echo": {"n": 7}}
    # stdin: an input request reaches the frontend, the answer reaches the cell.
    asking = channels.execute("answer = input('? ')\nprint(answer * 2)")
    channels.wait(lambda: channels.of(asking, "input_request"), "the input request")
    channels.send("stdin", "input_reply", {"value": "ab"})
    assert channels.reply(asking)["status"] == "ok"
    assert channels.stdout(asking) == "abab\n"
    # Interrupt through the REST API: the gateway's kernel manager does it its way.
    sleeping = channels.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
    channels.wait(lambda: "sleeping" in channels.stdout(sleeping), "the sleeping cell")
    assert servers.server("POST", f"/api/kernels/{kernel_id}/interrupt")[0] == 204
    interrupted = channels.reply(sleeping)
    assert interrupted["status"] == "error"
    assert interrupted["ename"] == "KeyboardInterrupt"
    assert channels.run("print('after the interrupt')") == "after the interrupt\n"
    # Restart: a new process behind the same kernel id and websocket, with a fresh namespace.
    channels.run("before_restart = 1")
    assert servers.server("POST", f"/api/kernels/{kernel_id}/restart")[0] == 200
    channels.wait_ready()
    assert channels.run("print('before_restart' in dir())") == "False\n"
