"""A minimal, single-threaded pyzmq kernel: the floor for the benchmarks.

It speaks just enough of the Jupyter messaging protocol (5.3) to be started and measured by
`jupyter_client` exactly like a real kernel: shell and control ROUTERs, an iopub PUB, a
heartbeat REP and a bound (unused) stdin ROUTER, all served by one `zmq.Poller` loop in one
thread. Every incoming message has its HMAC-SHA256 signature checked; `kernel_info_request`
and `execute_request` get complete replies wrapped in `status: busy` / `status: idle` on iopub.
Code is run with `exec` in a private namespace, without output capture, so the floor measures
the wire and the protocol, not a Python shell.

Two options add, one at a time, what a real kernel cannot do without, and nothing else; they
give the bounds against which async-kernel's own cost is read (`kernel_defs` in `kernels.py`):
- `--ipython` runs each cell with IPython's `InteractiveShell.run_cell` (its transforms,
  compile, events, displayhook and history, written every 20 cells as async-kernel does)
  instead of `exec`;
- `--thread` hands each request to one handler thread and the handler's messages back to the
  socket thread: one wake-up each way per request (the handler queues all of a request's
  messages and wakes the socket thread once, after the reply), the least a kernel whose
  sockets live on another thread than its cells can pay. The handler cannot be interrupted.

Usage: `python benchmarks/floor.py [--ipython] [--thread] -f CONNECTION_FILE` (what its
kernelspecs launch).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import hmac
import json
import os
import platform
import queue
import sys
import threading
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

_Request = tuple["zmq.Socket[bytes]", list[bytes], dict[str, Any]]
"""A decoded request for the handler thread: its socket, identities and message."""

DELIM = b"<IDS|MSG>"
PROTOCOL_VERSION = "5.3"


class FloorKernel:
    """The smallest kernel that answers the protocol correctly; one thread, one poller.

    Args:
        config: The parsed connection file.
        ipython: Run cells with IPython's `run_cell` instead of `exec`.
        thread: Handle requests on a handler thread (see the module's text).
    """

    def __init__(
        self, config: dict[str, Any], *, ipython: bool = False, thread: bool = False
    ) -> None:
        if config.get("signature_scheme", "hmac-sha256") != "hmac-sha256":
            raise ValueError("floor kernel only supports signature_scheme 'hmac-sha256'")
        key = config.get("key", "").encode()
        self._auth = hmac.new(key, digestmod=hashlib.sha256) if key else None
        self._session = uuid.uuid4().hex
        self._count = 0
        self._namespace: dict[str, Any] = {"__name__": "__main__"}
        self._running = True
        self._shell: Any = None
        if ipython:
            from IPython.core.interactiveshell import InteractiveShell

            self._shell = InteractiveShell.instance()
            # As async-kernel configures it: history written to sqlite every 20 cells.
            self._shell.history_manager.db_cache_size = 20
        # With `thread`: requests go to the handler through `_inbox`; its messages come back
        # through `_outbox`, and one byte on the pipe `_wake` wakes the socket thread for them.
        self._inbox: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._outbox: collections.deque[tuple[zmq.Socket[bytes], list[bytes]]] = collections.deque()
        self._wake = os.pipe() if thread else None
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
        frames = [*idents, DELIM, self._sign(parts), *parts]
        if self._wake is None:
            sock.send_multipart(frames)
        else:  # on the handler thread: the socket thread sends it
            self._outbox.append((sock, frames))

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
        if self._shell is not None:
            return self._run_cell(msg, code, silent=silent)
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

    def _run_cell(self, msg: dict[str, Any], code: str, *, silent: bool) -> dict[str, Any]:
        """Run the code with IPython's `run_cell`; its errors go to the real stdout."""
        count = self._shell.execution_count
        if not silent:
            self._publish("execute_input", {"code": code, "execution_count": count}, msg)
        store = bool(msg["content"].get("store_history", True)) and not silent
        result = self._shell.run_cell(code, store_history=store, silent=silent)
        error = result.error_before_exec or result.error_in_exec
        if error is not None:
            fields = {"ename": type(error).__name__, "evalue": str(error), "traceback": []}
            return {"status": "error", "execution_count": count, **fields}
        return {"status": "ok", "execution_count": count, "user_expressions": {}, "payload": []}

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
        if self._wake is None:
            self._handle(sock, idents, msg)
        else:
            self._inbox.put((sock, idents, msg))

    def _handler(self) -> None:
        """The handler thread (`thread`): handle each request, then wake the socket thread."""
        assert self._wake is not None
        while True:
            item = self._inbox.get()
            if item is None:
                return
            self._handle(*item)
            os.write(self._wake[1], b"x")

    def _flush(self) -> None:
        """Send what the handler thread queued (on the socket thread)."""
        while self._outbox:
            sock, frames = self._outbox.popleft()
            sock.send_multipart(frames)

    def _handle(self, sock: zmq.Socket[bytes], idents: list[bytes], msg: dict[str, Any]) -> None:
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
        if self._wake is not None and self._wake[0] in ready:
            os.read(self._wake[0], 4096)
            self._flush()
        # Control first: it must never wait behind the shell.
        for sock in (self.control, self.shell):
            if sock in ready:
                self._dispatch(sock)

    def serve(self) -> None:
        """Answer messages until a `shutdown_request` arrives."""
        poller = zmq.Poller()
        for sock in (self.shell, self.control, self.heartbeat, self.stdin):
            poller.register(sock, zmq.POLLIN)
        handler = None
        if self._wake is not None:
            poller.register(self._wake[0], zmq.POLLIN)
            handler = threading.Thread(target=self._handler, name="floor-handler", daemon=True)
            handler.start()
        self._publish("status", {"execution_state": "starting"}, {})
        self._flush()
        while self._running:
            try:
                self._step(poller)
            except KeyboardInterrupt:
                # SIGINT outside a cell: jupyter_client interrupts before it asks to shut down.
                continue
        if handler is not None:
            self._inbox.put(None)
        self._ctx.destroy(linger=1000)


def main(argv: list[str] | None = None) -> None:
    """Start the floor kernel from a connection file."""
    parser = argparse.ArgumentParser(description="A minimal pyzmq kernel (benchmark floor).")
    parser.add_argument("-f", "--connection-file", required=True)
    parser.add_argument("--ipython", action="store_true", help="run cells with IPython")
    parser.add_argument("--thread", action="store_true", help="handle requests on a thread")
    args = parser.parse_args(argv)
    with open(os.path.expanduser(args.connection_file)) as fh:
        config = json.load(fh)
    FloorKernel(config, ipython=args.ipython, thread=args.thread).serve()


if __name__ == "__main__":
    main()
