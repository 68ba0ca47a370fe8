"""A minimal, single-threaded pyzmq kernel: the floor for the benchmarks.

It speaks just enough of the Jupyter messaging protocol (5.3) to be started and measured by
`jupyter_client` exactly like a real kernel: shell and control ROUTERs, an iopub PUB, a
heartbeat REP and a bound (unused) stdin ROUTER, all served by one `zmq.Poller` loop in one
thread. Every incoming message has its HMAC-SHA256 signature checked; `kernel_info_request`
and `execute_request` get complete replies wrapped in `status: busy` / `status: idle` on iopub.
Code is run with `exec` in a private namespace, without output capture, so the floor measures
the wire and the protocol, not a Python shell.

Usage: `python benchmarks/floor.py -f CONNECTION_FILE` (what its kernelspec launches).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import platform
import sys
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

import zmq

try:
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency of async-kernel

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    _loads = json.loads

__all__ = ("FloorKernel", "main")

DELIM = b"<IDS|MSG>"
PROTOCOL_VERSION = "5.3"


class FloorKernel:
    """The smallest kernel that answers the protocol correctly; one thread, one poller.

    Args:
        config: The parsed connection file.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        if config.get("signature_scheme", "hmac-sha256") != "hmac-sha256":
            raise ValueError("floor kernel only supports signature_scheme 'hmac-sha256'")
        key = config.get("key", "").encode()
        self._auth = hmac.new(key, digestmod=hashlib.sha256) if key else None
        self._session = uuid.uuid4().hex
        self._count = 0
        self._namespace: dict[str, Any] = {"__name__": "__main__"}
        self._running = True
        self._ctx = zmq.Context()
        url = f"{config.get('transport', 'tcp')}://{config['ip']}"
        self.shell = self._bind(zmq.ROUTER, url, config["shell_port"])
        self.control = self._bind(zmq.ROUTER, url, config["control_port"])
        self.stdin = self._bind(zmq.ROUTER, url, config["stdin_port"])
        self.iopub = self._bind(zmq.PUB, url, config["iopub_port"])
        self.heartbeat = self._bind(zmq.REP, url, config["hb_port"])
        self._handlers = {
            "kernel_info_request": self.kernel_info_request,
            "execute_request": self.execute_request,
            "shutdown_request": self.shutdown_request,
            "interrupt_request": self.interrupt_request,
        }

    def _bind(self, kind: int, url: str, port: int) -> zmq.Socket[bytes]:
        sock = self._ctx.socket(kind)
        sock.linger = 1000
        sock.bind(f"{url}:{port}")
        return sock

    # -- wire format -------------------------------------------------------------------------

    def _sign(self, parts: list[bytes]) -> bytes:
        if self._auth is None:
            return b""
        mac = self._auth.copy()
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode()

    def _decode(self, frames: list[bytes]) -> tuple[list[bytes], dict[str, Any]] | None:
        """Split identities from the message and check its signature; None if invalid."""
        try:
            split = frames.index(DELIM)
        except ValueError:
            return None
        idents, rest = frames[:split], frames[split + 1 :]
        if len(rest) < 5:
            return None
        signature, parts = rest[0], rest[1:5]
        if self._auth is not None and not hmac.compare_digest(signature, self._sign(parts)):
            print("floor: dropped a message with a bad signature", file=sys.stderr)
            return None
        try:
            header, parent, metadata, content = (_loads(p) for p in parts)
        except ValueError:
            print("floor: dropped a message that is not JSON", file=sys.stderr)
            return None
        return idents, {
            "header": header,
            "parent_header": parent,
            "metadata": metadata,
            "content": content,
        }

    def _send(
        self,
        sock: zmq.Socket[bytes],
        msg_type: str,
        content: dict[str, Any],
        parent: dict[str, Any],
        idents: list[bytes],
    ) -> None:
        header = {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "floor",
            "session": self._session,
            "date": datetime.now(UTC).isoformat(),
            "version": PROTOCOL_VERSION,
        }
        parts = [_dumps(header), _dumps(parent.get("header", {})), b"{}", _dumps(content)]
        sock.send_multipart([*idents, DELIM, self._sign(parts), *parts])

    def _publish(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any]) -> None:
        self._send(self.iopub, msg_type, content, parent, [f"kernel.{msg_type}".encode()])

    # -- handlers ----------------------------------------------------------------------------

    def kernel_info_request(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Describe the floor kernel."""
        return {
            "status": "ok",
            "protocol_version": PROTOCOL_VERSION,
            "implementation": "floor",
            "implementation_version": "0.1.0",
            "language_info": {
                "name": "python",
                "version": platform.python_version(),
                "mimetype": "text/x-python",
                "file_extension": ".py",
            },
            "banner": "floor: a minimal pyzmq kernel for benchmarks",
            "help_links": [],
            "debugger": False,
        }

    def execute_request(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Run the code with `exec`; no output capture, no display hooks."""
        content = msg["content"]
        silent = bool(content.get("silent", False))
        if not silent and content.get("store_history", True):
            self._count += 1
        code = content.get("code", "")
        if not silent:
            self._publish("execute_input", {"code": code, "execution_count": self._count}, msg)
        try:
            exec(compile(code, f"<cell-{self._count}>", "exec"), self._namespace)
        except (Exception, KeyboardInterrupt) as exc:
            error = {
                "ename": type(exc).__name__,
                "evalue": str(exc),
                "traceback": traceback.format_exception(exc),
            }
            if not silent:
                self._publish("error", error, msg)
            return {"status": "error", "execution_count": self._count, **error}
        return {
            "status": "ok",
            "execution_count": self._count,
            "user_expressions": {},
            "payload": [],
        }

    def shutdown_request(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Stop the loop once the reply is out."""
        self._running = False
        return {"status": "ok", "restart": bool(msg["content"].get("restart", False))}

    def interrupt_request(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Nothing runs concurrently, so there is nothing to interrupt."""
        return {"status": "ok"}

    # -- loop --------------------------------------------------------------------------------

    def _dispatch(self, sock: zmq.Socket[bytes]) -> None:
        decoded = self._decode(sock.recv_multipart())
        if decoded is None:
            return
        idents, msg = decoded
        msg_type = msg["header"].get("msg_type", "")
        self._publish("status", {"execution_state": "busy"}, msg)
        handler = self._handlers.get(msg_type)
        if handler is None:
            reply = {"status": "error", "ename": "NotImplementedError", "evalue": msg_type}
        else:
            reply = handler(msg)
        reply_type = msg_type.removesuffix("_request") + "_reply"
        self._send(sock, reply_type, reply, msg, idents)
        self._publish("status", {"execution_state": "idle"}, msg)

    def _step(self, poller: zmq.Poller) -> None:
        ready = dict(poller.poll())
        if self.heartbeat in ready:
            self.heartbeat.send(self.heartbeat.recv())
        if self.stdin in ready:
            self.stdin.recv_multipart()  # the floor never asks for input
        # Control first: it must never wait behind the shell.
        for sock in (self.control, self.shell):
            if sock in ready:
                self._dispatch(sock)

    def serve(self) -> None:
        """Answer messages until a `shutdown_request` arrives."""
        poller = zmq.Poller()
        for sock in (self.shell, self.control, self.heartbeat, self.stdin):
            poller.register(sock, zmq.POLLIN)
        self._publish("status", {"execution_state": "starting"}, {})
        while self._running:
            try:
                self._step(poller)
            except KeyboardInterrupt:
                # SIGINT outside a cell: jupyter_client interrupts before it asks to shut down.
                continue
        self._ctx.destroy(linger=1000)


def main(argv: list[str] | None = None) -> None:
    """Start the floor kernel from a connection file."""
    parser = argparse.ArgumentParser(description="A minimal pyzmq kernel (benchmark floor).")
    parser.add_argument("-f", "--connection-file", required=True)
    args = parser.parse_args(argv)
    with open(os.path.expanduser(args.connection_file)) as fh:
        config = json.load(fh)
    FloorKernel(config).serve()


if __name__ == "__main__":
    main()
