"""Connection files: where the kernel's sockets live and the key that signs its messages."""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from async_kernel._enums import Channel

__all__ = ("ConnectionInfo", "read_connection_file", "write_connection_file")

_PORT_KEYS = {
    Channel.shell: "shell_port",
    Channel.control: "control_port",
    Channel.stdin: "stdin_port",
    Channel.iopub: "iopub_port",
    Channel.heartbeat: "hb_port",
}


@dataclass(slots=True)
class ConnectionInfo:
    """The contents of a connection file."""

    ip: str = "127.0.0.1"
    """The address (tcp) or path prefix (ipc) of the sockets."""
    transport: Literal["tcp", "ipc"] = "tcp"
    """`tcp`, or `ipc` for Unix domain sockets."""
    key: bytes = b""
    """The HMAC key; empty disables signing."""
    signature_scheme: str = "hmac-sha256"
    """The signing scheme."""
    ports: dict[Channel, int] = field(default_factory=dict[Channel, int])
    """The port of each socket; 0 means pick a free one when binding."""
    kernel_name: str = ""
    """The kernelspec name, when the launcher recorded it."""

    def url(self, channel: Channel, port: int | None = None) -> str:
        """Return the zmq endpoint of `channel` (with `port` instead of the recorded one)."""
        port = self.ports.get(channel, 0) if port is None else port
        if self.transport == "ipc":
            return f"ipc://{self.ip}-{port}"
        return f"tcp://{self.ip}:{port}"

    def to_dict(self) -> dict[str, Any]:
        """Return the connection file's JSON object."""
        data: dict[str, Any] = {key: self.ports.get(ch, 0) for ch, key in _PORT_KEYS.items()}
        data |= {
            "ip": self.ip,
            "transport": self.transport,
            "key": self.key.decode(),
            "signature_scheme": self.signature_scheme,
            "kernel_name": self.kernel_name,
        }
        return data


def read_connection_file(path: str | os.PathLike[str]) -> ConnectionInfo:
    """Read a connection file.

    Raises:
        ValueError: The file is not a JSON object or its transport is unknown.
    """
    data = orjson.loads(pathlib.Path(path).read_bytes())
    if not isinstance(data, dict):
        msg = f"{path}: a connection file must hold a JSON object"
        raise ValueError(msg)
    transport = data.get("transport", "tcp")
    if transport not in ("tcp", "ipc"):
        msg = f"{path}: unknown transport {transport!r} (use 'tcp' or 'ipc')"
        raise ValueError(msg)
    return ConnectionInfo(
        ip=data.get("ip", "127.0.0.1"),
        transport=transport,
        key=str(data.get("key", "")).encode(),
        signature_scheme=data.get("signature_scheme", "hmac-sha256"),
        ports={ch: int(data.get(key, 0) or 0) for ch, key in _PORT_KEYS.items()},
        kernel_name=data.get("kernel_name", ""),
    )


def write_connection_file(path: str | os.PathLike[str], info: ConnectionInfo) -> None:
    """Write `info` to `path`, readable by the owner only."""
    target = pathlib.Path(path)
    target.write_bytes(orjson.dumps(info.to_dict(), option=orjson.OPT_INDENT_2))
    target.chmod(0o600)
